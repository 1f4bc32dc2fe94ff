// Building the page's elements. Text always goes in as text nodes, never parsed as markup,
// so nothing a model or a file name contains can add elements or scripts to the page.

/** An element `tag` with attributes (`class`, `onclick`-style handlers as functions, others
 *  as attributes; null/false skip) and children (strings become text, null skips). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

/** Appends `children` (nested arrays, strings, nodes; null skipped) to `el`. */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** The element with `id`. */
export const $ = (id) => document.getElementById(id);

/** `bytes` as a short human size (1024-based). */
export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** A model's state as a labelled cell, with a progress bar while it loads. */
export function stateCell(state, progress, error) {
  const cell = h('td', { class: `state state-${state}` }, state);
  if (state === 'loading' && typeof progress === 'number') {
    cell.append(' ', h('progress', { max: 1, value: progress }));
  }
  if (error) cell.title = error;
  return cell;
}
