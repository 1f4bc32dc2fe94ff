// The workers view: each worker's state, process, cores, memory against the budget, slots,
// queue, requests waiting for memory and evictions, refreshed every two seconds while shown, and memory used over time.
import { $, h, bytes, stateCell } from './dom.js';
import { json } from './api.js';
import { draw } from './chart.js';

const EVERY_MS = 2000;
/** Samples the chart keeps: ten minutes at one per refresh. */
const SPAN = 300;
const used = [];
let timer = null;
let reading = false;

function row(w) {
  return h('tr', { 'data-model': w.model },
    h('td', { class: 'id', title: w.pinned ? 'resident: never evicted' : '' }, w.pinned ? `${w.model} (resident)` : w.model),
    stateCell(w.state, w.progress, w.error),
    h('td', {}, w.pid ?? '–'),
    h('td', {}, w.cores ? w.cores.join(',') : 'all'),
    h('td', {}, bytes(w.memory_bytes)),
    h('td', {}, bytes(w.budget_bytes)),
    h('td', {}, w.slots ? `${w.slots_busy} of ${w.slots}` : '–'),
    h('td', {}, w.queued),
    h('td', {}, w.waiting),
    h('td', {}, w.evictions),
    h('td', {}, w.restarts),
    h('td', { class: 'muted exit', title: w.last_exit || '' }, w.last_exit || ''));
}

async function refresh() {
  if (reading) return;
  reading = true;
  try {
    const v = await json('/admin/workers');
    const memory = v.workers.reduce((sum, w) => sum + (w.memory_bytes || w.budget_bytes || 0), 0);
    used.push(memory);
    if (used.length > SPAN) used.shift();
    $('workers-table').tBodies[0].replaceChildren(...v.workers.map(row));
    $('workers-empty').hidden = v.workers.length > 0;
    $('memory-summary').textContent =
      `${bytes(v.ram_used_bytes)} counted of a ${bytes(v.ram_budget_bytes)} budget · ${bytes(memory)} resident now`;
    draw($('memory-chart'), used, v.ram_budget_bytes, SPAN);
  } catch (e) {
    $('memory-summary').textContent = `cannot read the workers: ${e.message}`;
  } finally {
    reading = false;
  }
}

/** Starts (true) or stops refreshing. */
export function show(on) {
  clearInterval(timer);
  timer = null;
  if (on) {
    refresh();
    timer = setInterval(refresh, EVERY_MS);
  }
}
