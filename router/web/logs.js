// The logs view: the log of a model's worker, streamed as it is written.
import { $, h } from './dom.js';
import { events } from './api.js';

/** Lines kept on the page. */
const KEEP = 2000;
let following = null;

async function follow() {
  if (following) following.abort();
  const model = $('logs-model').value;
  const pre = $('logs-lines');
  pre.replaceChildren();
  if (!model) return;
  const controller = new AbortController();
  following = controller;
  $('logs-status').textContent = 'following';
  try {
    const path = `/admin/models/${encodeURIComponent(model)}/logs`;
    for await (const ev of events(path, { signal: controller.signal })) {
      if (ev.line !== undefined) {
        const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(h('div', {}, ev.line));
        while (pre.childElementCount > KEEP) pre.firstChild.remove();
        if (stick) pre.scrollTop = pre.scrollHeight;
      } else if (ev.skipped) pre.append(h('div', { class: 'muted' }, `… ${ev.skipped} lines skipped`));
      else if (ev.ended) $('logs-status').textContent = 'the worker has exited';
      else if (ev.started === false) $('logs-status').textContent = 'no worker of this model has started yet';
    }
    if (following === controller && $('logs-status').textContent === 'following') $('logs-status').textContent = 'stream ended';
  } catch (e) {
    if (e.name !== 'AbortError') $('logs-status').textContent = e.message;
  } finally {
    // The next model list (a worker started or ended) follows again.
    if (following === controller) following = null;
  }
}

/** Fills the picker with `list` (/v1/models data), keeping the current choice. */
export function setModels(list) {
  const select = $('logs-model');
  const current = select.value;
  const models = list.filter((m) => !m.task);
  select.replaceChildren(...models.map((m) => h('option', { value: m.id }, `${m.id} (${m.state})`)));
  // Keep the choice; the first time, a model that has a worker.
  const running = models.find((m) => m.state !== 'unloaded');
  if (models.some((m) => m.id === current)) select.value = current;
  else if (running) select.value = running.id;
  if (!following && !$('view-logs').hidden) follow();
}

/** Starts following the chosen model's log (true) or stops (false). */
export function show(on) {
  if (on) follow();
  else if (following) { following.abort(); following = null; }
}

export function init() {
  $('logs-model').addEventListener('change', follow);
}
