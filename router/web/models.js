// The models view: every model in the bucket with its state, load and unload, and pulling a
// new one with a live progress bar.
import { $, h, bytes, stateCell } from './dom.js';
import { call, events } from './api.js';

let onChange = () => {};

/** The Load or Unload button for model `id` in `state`; for an adapter (it runs on `base`'s
 * worker, which its base's row loads and unloads) the base's name instead. */
function actionCell(id, state, base) {
  if (base) return h('td', { class: 'muted' }, `on ${base}`);
  const act = (what) => async (e) => {
    e.target.disabled = true;
    $('models-error').textContent = '';
    try {
      await call(`/admin/models/${encodeURIComponent(id)}/${what}`, { method: 'POST' });
    } catch (err) {
      $('models-error').textContent = `${what} ${id}: ${err.message}`;
    } finally {
      onChange();
    }
  };
  const running = state === 'ready' || state === 'loading' || state === 'draining';
  return h('td', {}, running
    ? h('button', { type: 'button', 'data-action': 'unload', onclick: act('unload') }, 'Unload')
    : h('button', { type: 'button', 'data-action': 'load', onclick: act('load') }, 'Load'));
}

function row(m) {
  return h('tr', { 'data-model': m.id, 'data-base': m.base || '' },
    h('td', { class: 'id' }, m.id, (m.aliases || []).length ? h('span', { class: 'aliases' }, m.aliases.join(', ')) : null),
    h('td', {}, m.architecture || '–'),
    h('td', {}, m.parameters || '–', h('span', { class: 'aliases' }, bytes(m.size_bytes))),
    h('td', {}, m.quantization || '–'),
    h('td', {}, m.context_length ?? '–'),
    h('td', {}, (m.capabilities || []).join(', ')),
    stateCell(m.state, m.progress, m.error),
    actionCell(m.id, m.state, m.base));
}

/** Shows `list` (/v1/models data; tasks left out). */
export function setModels(list) {
  const models = list.filter((m) => !m.task);
  const body = $('models-table').tBodies[0];
  body.replaceChildren(...models.map(row));
  if (!models.length) {
    body.append(h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No models yet: drop GGUF files into the models folder or pull one below.')));
  }
}

/** Shows one model's new state from the event stream; false when its row is not on the page. */
export function setState(ev) {
  const tr = document.querySelector(`#models-table tr[data-model="${CSS.escape(ev.model)}"]`);
  if (!tr) return false;
  tr.cells[6].replaceWith(stateCell(ev.state, ev.progress, ev.error));
  tr.cells[7].replaceWith(actionCell(ev.model, ev.state, tr.dataset.base));
  return true;
}

async function pull() {
  const name = $('pull-name').value.trim();
  const file = $('pull-file').value.trim();
  if (!name) return;
  const bar = $('pull-progress');
  const status = $('pull-status');
  $('pull-box').hidden = false;
  $('pull-go').disabled = true;
  bar.value = 0;
  bar.removeAttribute('data-done');
  status.textContent = `asking for ${name}…`;
  let total = 0;
  try {
    const body = file ? { model: name, file } : { model: name };
    for await (const ev of events('/admin/pull', { method: 'POST', body })) {
      if (ev.total) total = ev.total;
      if (ev.status === 'pulling') status.textContent = `pulling ${ev.file} from ${ev.repo}`;
      else if (ev.status === 'downloading' && total) {
        bar.value = ev.completed / total;
        status.textContent = `${bytes(ev.completed)} of ${bytes(total)}`;
      } else if (ev.status === 'verifying') status.textContent = 'verifying the checksum…';
      else if (ev.status === 'success') {
        bar.value = 1;
        bar.dataset.done = ev.model.id;
        status.textContent = `added ${ev.model.id}`;
      } else if (ev.status === 'error') status.textContent = `failed: ${ev.error.message}`;
    }
  } catch (e) {
    status.textContent = `failed: ${e.message}`;
  } finally {
    $('pull-go').disabled = false;
    onChange();
  }
}

export function init(changed) {
  onChange = changed;
  $('models-table').after(h('p', { id: 'models-error', class: 'error' }));
  $('pull-go').addEventListener('click', pull);
}
