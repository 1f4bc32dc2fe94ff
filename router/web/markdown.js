// Markdown for chat answers, rendered straight to elements (never through an HTML string):
// fenced code blocks, headings, lists, quotes, paragraphs, and inline code, bold, italics and
// links. Raw HTML in the text stays text. Links open only for http(s) addresses.
import { h } from './dom.js';

const INLINE = /(`{1,3})([^`]+)\1|\*\*([^*]+?)\*\*|__([^_]+?)__|\*([^*\s][^*]*?)\*|\b_([^_\s][^_]*?)_\b|\[([^\]]+)\]\(([^)\s]+)\)/g;

/** The inline elements of `text`. */
export function inline(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[1]) out.push(h('code', {}, m[2]));
    else if (m[3] || m[4]) out.push(h('strong', {}, inline(m[3] || m[4])));
    else if (m[5] || m[6]) out.push(h('em', {}, inline(m[5] || m[6])));
    else if (/^https?:\/\//i.test(m[8])) {
      out.push(h('a', { href: m[8], target: '_blank', rel: 'noopener noreferrer' }, inline(m[7])));
    } else out.push(m[0]);
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

const FENCE = /^\s*(```|~~~)\s*([\w+#.-]*)\s*$/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBER = /^\s*\d+[.)]\s+(.*)$/;
const QUOTE = /^\s*>\s?(.*)$/;

/** The block elements of `text` (an unclosed code fence runs to the end, as while streaming). */
export function render(text) {
  const lines = text.split('\n');
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(FENCE);
    if (fence) {
      const code = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) code.push(lines[i++]);
      i++;
      const attrs = fence[2] ? { 'data-lang': fence[2] } : {};
      blocks.push(h('pre', {}, h('code', attrs, code.join('\n'))));
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      blocks.push(h(`h${Math.min(heading[1].length + 2, 6)}`, {}, inline(heading[2])));
      i++;
      continue;
    }
    const list = BULLET.test(line) ? BULLET : NUMBER.test(line) ? NUMBER : null;
    if (list) {
      const items = [];
      while (i < lines.length && list.test(lines[i])) items.push(h('li', {}, inline(lines[i++].match(list)[1])));
      blocks.push(h(list === BULLET ? 'ul' : 'ol', {}, items));
      continue;
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(lines[i++].match(QUOTE)[1]);
      blocks.push(h('blockquote', {}, render(quoted.join('\n'))));
      continue;
    }
    if (!line.trim()) { i++; continue; }
    const para = [];
    while (i < lines.length && lines[i].trim() && !FENCE.test(lines[i]) && !HEADING.test(lines[i]) &&
           !BULLET.test(lines[i]) && !NUMBER.test(lines[i]) && !QUOTE.test(lines[i])) para.push(lines[i++]);
    blocks.push(h('p', {}, inline(para.join('\n'))));
  }
  return blocks;
}
