// A chart of memory over time, drawn as SVG elements (no canvas, no library).
import { bytes } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Draws `samples` (bytes used, oldest first, at most `span` of them) into `svg` across its
 *  width on screen, the newest at the right edge; the time scale grows with the samples until
 *  there are `span`. The memory scale fits the samples; the
 *  `budget` line is drawn when it is within twice the largest sample. */
export function draw(svg, samples, budget, span) {
  const w = svg.clientWidth || 600;
  const hgt = svg.clientHeight || 120;
  svg.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
  const most = Math.max(...samples, 1);
  const showBudget = budget > 0 && budget <= most * 2;
  const top = showBudget ? Math.max(budget, most) * 1.15 : most * 1.6;
  const y = (v) => (hgt - (v / top) * hgt).toFixed(1);
  const n = Math.min(samples.length, span);
  const x = (i) => (i / Math.max(n - 1, 1) * w).toFixed(1);
  const parts = [];
  if (showBudget) {
    parts.push(el('line', { class: 'budget', x1: 0, x2: w, y1: y(budget), y2: y(budget) }));
    parts.push(el('text', { class: 'label', x: 4, y: Number(y(budget)) - 4 }, `budget ${bytes(budget)}`));
  }
  if (samples.length) {
    const points = samples.map((v, i) => `${x(i)},${y(v)}`);
    parts.push(el('polygon', { class: 'area', points: `${x(0)},${hgt} ${points.join(' ')} ${w},${hgt}` }));
    parts.push(el('polyline', { class: 'used', points: points.join(' ') }));
    parts.push(el('text', { class: 'label', x: 4, y: 14 }, `now ${bytes(samples[samples.length - 1])}, most ${bytes(most)}`));
  }
  svg.replaceChildren(...parts);
}
