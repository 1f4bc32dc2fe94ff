// Talking to this server: JSON calls and server-sent event streams over fetch, with the API
// key the user gave (kept in this browser's local storage, sent only to this origin).
import { $ } from './dom.js';

const KEYS = { api: 'model-bucket.api-key', admin: 'model-bucket.admin-key' };

/** Which key a path wants: `/admin/*` may have a key of its own. */
const scope = (path) => (path.startsWith('/admin/') ? 'admin' : 'api');

function key(path) {
  return localStorage.getItem(KEYS[scope(path)]) || localStorage.getItem(KEYS.api);
}

/** An error answer from the server, with its envelope's message, status and code. */
export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || null;
  }
}

let asking = null;

/** Asks the user for the key `path` wants (one dialog at a time) and keeps it; rejects when
 *  the user dismisses the dialog (Escape). */
function askKey(path, wrong) {
  if (asking) return asking;
  const dialog = $('key-dialog');
  const input = $('key-input');
  $('key-why').textContent = (wrong ? 'That key was refused. ' : '') +
    (scope(path) === 'admin' ? 'This server wants its admin key for this.' : 'This server wants an API key.');
  input.value = '';
  asking = new Promise((resolve, reject) => {
    let given = false;
    const done = () => {
      const k = input.value.trim();
      if (!k) return;
      localStorage.setItem(KEYS[scope(path)], k);
      given = true;
      dialog.close();
    };
    const enter = (e) => { if (e.key === 'Enter') done(); };
    const closed = () => {
      $('key-save').removeEventListener('click', done);
      input.removeEventListener('keydown', enter);
      asking = null;
      updateForget();
      if (given) resolve();
      else reject(new ApiError(401, { error: { message: 'This server wants a key; reload the page to enter it.' } }));
    };
    $('key-save').addEventListener('click', done);
    input.addEventListener('keydown', enter);
    dialog.addEventListener('close', closed, { once: true });
    dialog.showModal();
    input.focus();
  });
  return asking;
}

/** Shows the "Forget key" button while a key is kept. */
export function updateForget() {
  $('forget-key').hidden = !(localStorage.getItem(KEYS.api) || localStorage.getItem(KEYS.admin));
}

/** Forgets the kept keys. */
export function forgetKeys() {
  localStorage.removeItem(KEYS.api);
  localStorage.removeItem(KEYS.admin);
  updateForget();
}

/** `fetch` of `path` with the key; asks for a key on 401 and tries again. Throws ApiError
 *  for any other error answer. */
export async function call(path, { method = 'GET', body, signal } = {}) {
  for (let tries = 0; ; tries++) {
    const headers = {};
    const k = key(path);
    if (k) headers.Authorization = `Bearer ${k}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
    if (res.status === 401 && tries < 5) {
      await askKey(path, Boolean(k));
      continue;
    }
    if (!res.ok) {
      let envelope = null;
      try { envelope = await res.json(); } catch { /* not JSON */ }
      throw new ApiError(res.status, envelope);
    }
    return res;
  }
}

/** The JSON answer of `path`. */
export async function json(path, opts) {
  return (await call(path, opts)).json();
}

/** The `data:` payloads of an event stream from `path`, parsed as JSON (`[DONE]` ends it). */
export async function* events(path, opts) {
  const res = await call(path, opts);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
        if (!data) continue;
        if (data === '[DONE]') return;
        yield JSON.parse(data);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
