// The chat view: a conversation with any model or task, streamed, with stop and regenerate.
import { $, h } from './dom.js';
import { events, ApiError } from './api.js';
import { render } from './markdown.js';

/** The conversation so far, without the system prompt: [{role, content}]. */
const history = [];
let running = null;
/** Bumped by Clear: an answer that was streaming for an older conversation is dropped. */
let conversation = 0;

function settings() {
  const num = (id, parse = Number) => {
    const v = $(id).value.trim();
    return v === '' ? undefined : parse(v);
  };
  return {
    temperature: num('chat-temperature'),
    top_p: num('chat-top-p'),
    top_k: num('chat-top-k', (v) => parseInt(v, 10)),
    min_p: num('chat-min-p'),
    max_tokens: num('chat-max-tokens', (v) => parseInt(v, 10)),
    seed: num('chat-seed', (v) => parseInt(v, 10)),
  };
}

function bubble(role, content) {
  const body = h('div', { class: 'body' });
  const el = h('div', { class: `msg ${role}` }, h('div', { class: 'role' }, role), body);
  show(body, role, content);
  $('chat-messages').append(el);
  el.scrollIntoView({ block: 'end' });
  return el;
}

function show(body, role, content) {
  if (role === 'assistant') body.replaceChildren(...render(content));
  else body.replaceChildren(h('p', {}, content));
}

function redraw() {
  $('chat-messages').replaceChildren();
  for (const m of history) bubble(m.role, m.content);
}

function buttons() {
  $('chat-send').disabled = Boolean(running);
  $('chat-stop').disabled = !running;
  $('chat-regenerate').disabled = Boolean(running) || history.length === 0;
}

function fail(message) {
  const e = $('chat-error');
  e.textContent = message;
  e.hidden = !message;
}

/** Streams the assistant's answer to `history` into a new bubble. */
async function answer() {
  const model = $('chat-model').value;
  const mine = conversation;
  fail('');
  const system = $('chat-system').value.trim();
  const messages = (system ? [{ role: 'system', content: system }] : []).concat(history);
  const el = bubble('assistant', '');
  el.classList.add('streaming');
  const body = el.querySelector('.body');
  const controller = new AbortController();
  running = controller;
  buttons();
  const started = performance.now();
  let first = null;
  let text = '';
  let pieces = 0;
  let usage = null;
  let finish = null;
  let frame = 0;
  const paint = () => {
    frame = 0;
    show(body, 'assistant', text);
    el.scrollIntoView({ block: 'end' });
  };
  try {
    const req = { model, messages, stream: true, stream_options: { include_usage: true }, ...settings() };
    for await (const chunk of events('/v1/chat/completions', { method: 'POST', body: req, signal: controller.signal })) {
      if (chunk.error) throw new ApiError(500, chunk);
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices || []) {
        const piece = (c.delta && c.delta.content) || '';
        if (piece) {
          if (first === null) first = performance.now();
          text += piece;
          pieces++;
          if (!frame) frame = requestAnimationFrame(paint);
        }
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
  } catch (e) {
    if (e.name !== 'AbortError') fail(e.message);
    else finish = 'stopped';
  } finally {
    if (frame) cancelAnimationFrame(frame);
    paint();
    el.classList.remove('streaming');
    running = null;
  }
  if (mine === conversation) {
    // An answer that failed before its first token leaves the question to regenerate.
    if (text) history.push({ role: 'assistant', content: text });
    else el.remove();
    stats(started, first, performance.now(), usage ? usage.completion_tokens : pieces, finish);
  }
  buttons();
}

function stats(started, first, ended, tokens, finish) {
  const s = $('chat-stats');
  if (first === null) { s.textContent = finish ? `finish: ${finish}` : ''; return; }
  const ttft = first - started;
  const rate = tokens > 1 ? (tokens - 1) / ((ended - first) / 1000) : 0;
  s.dataset.ttftMs = ttft.toFixed(0);
  s.dataset.tokensPerSecond = rate.toFixed(1);
  s.textContent = `time to first token ${ttft.toFixed(0)} ms · ${rate.toFixed(1)} tokens/s · ${tokens} tokens` +
    (finish ? ` · finish: ${finish}` : '');
}

function send() {
  const input = $('chat-input');
  const text = input.value.trim();
  if (!text || running) return;
  if (!$('chat-model').value) { fail('No model to talk to: add one on the Models tab.'); return; }
  input.value = '';
  history.push({ role: 'user', content: text });
  bubble('user', text);
  answer();
}

function regenerate() {
  if (running) return;
  while (history.length && history[history.length - 1].role === 'assistant') history.pop();
  if (!history.length) return;
  redraw();
  answer();
}

/** Fills the model picker with `list` (/v1/models data), keeping the current choice. */
export function setModels(list) {
  const select = $('chat-model');
  const current = select.value;
  const chat = list.filter((m) => m.task || (m.capabilities || []).includes('chat'));
  const other = list.filter((m) => !chat.includes(m) && !(m.capabilities || []).includes('embeddings'));
  select.replaceChildren(...chat.concat(other).map((m) => h('option', { value: m.id }, m.id)));
  if (chat.concat(other).some((m) => m.id === current)) select.value = current;
}

export function init() {
  $('chat-send').addEventListener('click', send);
  $('chat-stop').addEventListener('click', () => running && running.abort());
  $('chat-regenerate').addEventListener('click', regenerate);
  $('chat-clear').addEventListener('click', () => {
    if (running) running.abort();
    conversation++;
    history.length = 0;
    redraw();
    $('chat-stats').textContent = '';
    fail('');
    buttons();
  });
  $('chat-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); send(); }
  });
  buttons();
}
