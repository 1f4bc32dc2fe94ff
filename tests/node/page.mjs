// The web page in headless Chromium, driven by Puppeteer (run by tests/tests/web_page.rs).
//
//   node page.mjs   with MB_URL (a server holding SmolLM2, pulling from the stand-in hub),
//                   MB_KEY_URL and MB_KEY (a server that wants that key), MB_SMOL_ID,
//                   MB_PULL_REPO (a repo the hub serves slowly), MB_SHOTS (screenshot folder),
//                   CHROMIUM (the browser).
//
// Prints one line per check and ends with "N/N passed"; exits non-zero on the first failure.
import puppeteer from 'puppeteer-core';
import assert from 'node:assert/strict';
import path from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const URL_MAIN = env('MB_URL');
const URL_KEY = env('MB_KEY_URL');
const KEY = env('MB_KEY');
const SMOL = env('MB_SMOL_ID');
const PULL_REPO = env('MB_PULL_REPO');
const SHOTS = env('MB_SHOTS');

const browser = await puppeteer.launch({
  executablePath: env('CHROMIUM'),
  headless: true,
  // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-extensions'],
  defaultViewport: { width: 1280, height: 800 },
});

let passed = 0;
const checks = [];
const check = (name, fn) => checks.push([name, fn]);

/** A page on `origin` that records console errors, page errors and requests elsewhere. */
async function open(origin) {
  const page = await browser.newPage();
  page.problems = [];
  page.on('console', (m) => { if (m.type() === 'error') page.problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('request', (r) => {
    if (!r.url().startsWith(origin + '/') && !r.url().startsWith('data:')) page.problems.push(`outside request: ${r.url()}`);
  });
  page.setDefaultTimeout(120_000);
  await page.goto(origin + '/', { waitUntil: 'load' });
  return page;
}

const text = (page, sel) => page.$eval(sel, (e) => e.textContent);
const stateOf = (page, id) =>
  page.$eval(`#models-table tr[data-model="${id}"] td.state`, (e) => e.textContent.trim().split(' ')[0]).catch(() => null);
const waitState = (page, id, state) =>
  page.waitForFunction(
    (id, state) => {
      const td = document.querySelector(`#models-table tr[data-model="${id}"] td.state`);
      return td && td.textContent.trim().startsWith(state);
    },
    {},
    id,
    state,
  );

/** Clicks `sel` as soon as it is on the page, in one step (rows are redrawn as states change,
 *  so a found element may be replaced before a separate click lands). */
const press = (page, sel) =>
  page.waitForFunction((sel) => {
    const e = document.querySelector(sel);
    if (!e || e.disabled) return false;
    e.click();
    return true;
  }, {}, sel);

/** How many answers the chat shows, finished or not. */
const answered = (page) => page.$$eval('.msg.assistant', (l) => l.length);

/** Waits until there are more than `before` answers and none is streaming (a short answer
 *  may start and end between two looks). */
const untilAnswered = (page, before) =>
  page.waitForFunction(
    (n) => document.querySelectorAll('.msg.assistant').length > n && !document.querySelector('.msg.assistant.streaming'),
    {},
    before,
  );

/** Sends `message` in the chat and resolves once the answer is complete; returns how the
 *  answer's text grew (one entry per change seen on the page). */
async function chat(page, message, maxTokens) {
  await page.$eval('#chat-max-tokens', (e, n) => { e.value = String(n); }, maxTokens);
  await page.evaluate(() => {
    window.__growth = [];
    const box = document.getElementById('chat-messages');
    window.__watch = new MutationObserver(() => {
      const last = [...box.querySelectorAll('.msg.assistant')].pop();
      if (last && last.classList.contains('streaming')) window.__growth.push(last.querySelector('.body').textContent.length);
    });
    window.__watch.observe(box, { childList: true, subtree: true, characterData: true });
  });
  const before = await answered(page);
  await page.type('#chat-input', message);
  await page.click('#chat-send');
  await untilAnswered(page, before);
  return page.evaluate(() => { window.__watch.disconnect(); return window.__growth; });
}

const main = await open(URL_MAIN);

check('the page loads and lists the models', async () => {
  await main.waitForFunction((id) => [...document.querySelectorAll('#chat-model option')].some((o) => o.value === id), {}, SMOL);
  assert.equal(await main.title(), 'Model Bucket');
  const res = await main.evaluate(async () => {
    const r = await fetch('/');
    return r.headers.get('content-security-policy');
  });
  assert.match(res, /default-src 'none'/);
});

check('Markdown renders to elements, and markup in answers stays text', async () => {
  const out = await main.evaluate(async () => {
    const md = await import('/page/markdown.js');
    const box = document.createElement('div');
    box.append(...md.render('# Title\n\nSome **bold** and `code` <img src=x onerror=alert(1)>\n\n```rust\nfn main() {}\n```\n- one\n- two\n\n[site](javascript:alert(1)) [ok](https://example.org)'));
    return {
      tags: [...box.children].map((e) => e.tagName),
      strong: box.querySelector('strong')?.textContent,
      code: box.querySelector('pre code')?.textContent,
      lang: box.querySelector('pre code')?.dataset.lang,
      images: box.querySelectorAll('img').length,
      links: [...box.querySelectorAll('a')].map((a) => a.getAttribute('href')),
    };
  });
  assert.deepEqual(out.tags, ['H3', 'P', 'PRE', 'UL', 'P']);
  assert.equal(out.strong, 'bold');
  assert.equal(out.code, 'fn main() {}');
  assert.equal(out.lang, 'rust');
  assert.equal(out.images, 0, 'HTML in the text is not parsed');
  assert.deepEqual(out.links, ['https://example.org'], 'only http(s) links');
});

check('a chat with SmolLM2 streams its answer and shows time to first token and tokens/s', async () => {
  await main.select('#chat-model', SMOL);
  await main.$eval('#chat-temperature', (e) => { e.value = '0'; });
  await main.$eval('#chat-seed', (e) => { e.value = '7'; });
  const growth = await chat(main, 'Write three sentences about the sea.', 48);
  const answer = await text(main, '.msg.assistant .body');
  assert.ok(answer.trim().length > 0, 'an answer');
  const partial = growth.filter((n) => n > 0 && n < answer.length);
  assert.ok(new Set(partial).size >= 2, `the answer appeared piece by piece: ${JSON.stringify(growth)}`);
  assert.match(await text(main, '#chat-stats'), /time to first token \d+ ms · [\d.]+ tokens\/s · \d+ tokens/);
  await main.screenshot({ path: path.join(SHOTS, 'chat.png') });
});

check('regenerate replaces the answer; stop ends a long one', async () => {
  await main.click('#chat-regenerate');
  // The old answer goes at once; the new one arrives in its place.
  await untilAnswered(main, 0);
  assert.equal(await answered(main), 1, 'one answer, replaced');
  assert.ok((await text(main, '.msg.assistant .body')).trim().length > 0, 'a new answer');
  await main.$eval('#chat-max-tokens', (e) => { e.value = '2000'; });
  await main.type('#chat-input', 'Now tell me a very long story about a lighthouse keeper.');
  await main.click('#chat-send');
  await main.waitForFunction(() => {
    const s = document.querySelector('.msg.assistant.streaming .body');
    return s && s.textContent.length > 20;
  });
  await main.click('#chat-stop');
  await main.waitForFunction(() => !document.querySelector('.msg.assistant.streaming'), { timeout: 10_000 });
  assert.match(await text(main, '#chat-stats'), /finish: stopped/);
  assert.equal(await main.$eval('#chat-error', (e) => e.hidden), true, 'stopping is not an error');
});

check('unload changes the model state on the page', async () => {
  await main.goto(URL_MAIN + '/#models');
  await waitState(main, SMOL, 'ready');
  await press(main, `#models-table tr[data-model="${SMOL}"] button[data-action="unload"]`);
  await waitState(main, SMOL, 'unloaded');
  await press(main, `#models-table tr[data-model="${SMOL}"] button[data-action="load"]`);
  await waitState(main, SMOL, 'ready');
});

check('a pull from the hub shows progress and ends with the model listed', async () => {
  await main.type('#pull-name', PULL_REPO);
  await main.click('#pull-go');
  await main.waitForFunction(() => {
    const p = document.getElementById('pull-progress');
    return p.value > 0 && p.value < 1;
  }, { polling: 20 });
  const id = await main.waitForFunction(() => document.getElementById('pull-progress').dataset.done)
    .then((h) => h.jsonValue());
  assert.match(id, /^eden_/);
  await main.waitForSelector(`#models-table tr[data-model="${id}"]`);
  assert.equal(await stateOf(main, id), 'unloaded');
});

check('the workers view shows the worker live, with a memory chart', async () => {
  await main.goto(URL_MAIN + '/#workers');
  await main.waitForSelector(`#workers-table tr[data-model="${SMOL}"]`);
  const pid = await main.$eval(`#workers-table tr[data-model="${SMOL}"]`, (tr) => tr.cells[2].textContent);
  assert.match(pid, /^\d+$/);
  // Requests waiting for memory and evictions have their columns.
  const heads = await main.$$eval('#workers-table th', (ths) => ths.map((t) => t.textContent));
  const cells = await main.$eval(`#workers-table tr[data-model="${SMOL}"]`, (tr) => [...tr.cells].map((c) => c.textContent));
  assert.equal(cells[heads.indexOf('Waiting for memory')], '0');
  assert.match(cells[heads.indexOf('Evictions')], /^\d+$/);
  await main.waitForFunction(() => {
    const line = document.querySelector('#memory-chart polyline');
    return line && line.getAttribute('points').split(' ').length >= 3;
  });
  await main.screenshot({ path: path.join(SHOTS, 'workers.png') });
});

check('the logs view streams the worker log', async () => {
  await main.goto(URL_MAIN + '/#logs');
  await main.waitForFunction((id) => [...document.querySelectorAll('#logs-model option')].some((o) => o.value === id), {}, SMOL);
  await main.select('#logs-model', SMOL);
  await main.waitForFunction(() => document.querySelectorAll('#logs-lines div').length > 0);
});

check('no console errors and no request outside the server', async () => {
  assert.deepEqual(main.problems, []);
});

check('with an API key set, the page asks for it once and then works', async () => {
  const page = await open(URL_KEY);
  await page.waitForSelector('#key-dialog[open]');
  await page.type('#key-input', 'wrong-key');
  await page.click('#key-save');
  await page.waitForFunction(() => document.getElementById('key-why').textContent.includes('refused'));
  await page.$eval('#key-input', (e) => { e.value = ''; });
  await page.type('#key-input', KEY);
  await page.click('#key-save');
  await page.waitForFunction((id) => [...document.querySelectorAll('#chat-model option')].some((o) => o.value === id), {}, SMOL);
  await page.select('#chat-model', SMOL);
  await chat(page, 'Say hello.', 8);
  assert.ok((await text(page, '.msg.assistant .body')).trim().length > 0);
  // Kept in the browser: a reload does not ask again.
  await page.reload({ waitUntil: 'load' });
  await page.waitForFunction((id) => [...document.querySelectorAll('#chat-model option')].some((o) => o.value === id), {}, SMOL);
  assert.equal(await page.$('#key-dialog[open]'), null);
  const problems = page.problems.filter((p) => !p.includes('401'));
  assert.deepEqual(problems, [], 'only the refused key is logged');
});

let failed = false;
for (const [name, fn] of checks) {
  try {
    await fn();
    passed++;
    console.log(`ok ${name}`);
  } catch (e) {
    failed = true;
    console.log(`FAILED ${name}: ${e.stack || e}`);
    await main.screenshot({ path: path.join(SHOTS, 'failure.png') }).catch(() => {});
    break;
  }
}
console.log(`${passed}/${checks.length} passed`);
await browser.close();
process.exit(failed ? 1 : 0);
