// The page's entry: tabs, the model list shared by the views, and live model states from
// /admin/events.
import { $ } from './dom.js';
import { json, events, forgetKeys, updateForget } from './api.js';
import * as chat from './chat.js';
import * as models from './models.js';
import * as workers from './workers.js';
import * as logs from './logs.js';

const VIEWS = ['chat', 'models', 'workers', 'logs'];

function route() {
  const want = location.hash.slice(1);
  const view = VIEWS.includes(want) ? want : 'chat';
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.view === view);
  workers.show(view === 'workers');
  logs.show(view === 'logs');
}

let refreshing = null;
let again = false;

/** Reads /v1/models again and shows it everywhere. A call while a read is under way makes one
 *  more read after it, so what is shown is never older than the last call. */
function refresh() {
  if (refreshing) {
    again = true;
    return refreshing;
  }
  refreshing = (async () => {
    do {
      again = false;
      await readModels();
    } while (again);
    refreshing = null;
  })();
  return refreshing;
}

async function readModels() {
  try {
    const v = await json('/v1/models');
    chat.setModels(v.data);
    models.setModels(v.data);
    logs.setModels(v.data);
    const n = v.data.filter((m) => !m.task);
    // An adapter shows its base's worker: count workers, not adapters.
    const loaded = n.filter((m) => m.state === 'ready' && !m.base).length;
    $('server-status').textContent = `${n.length} ${n.length === 1 ? 'model' : 'models'} · ${loaded} loaded`;
  } catch (e) {
    $('server-status').textContent = `server: ${e.message}`;
  }
}

/** Follows model state changes for as long as the page is open, reconnecting after a pause. */
async function watch() {
  for (let pause = 1000; ; pause = Math.min(pause * 2, 30000)) {
    try {
      for await (const ev of events('/admin/events')) {
        pause = 1000;
        // A new model, or one that settled: the pickers and counts follow.
        if (!models.setState(ev) || ev.state !== 'loading') refresh();
      }
    } catch (e) {
      $('server-status').textContent = `server: ${e.message}`;
    }
    await new Promise((r) => setTimeout(r, pause));
  }
}

function start() {
  chat.init();
  models.init(refresh);
  logs.init();
  $('forget-key').addEventListener('click', () => { forgetKeys(); location.reload(); });
  updateForget();
  window.addEventListener('hashchange', route);
  route();
  refresh().then(watch);
}

start();
