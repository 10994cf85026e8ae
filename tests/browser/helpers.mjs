// Shared pieces of the dashboard browser tests: server processes, a cuttable TCP proxy,
// the browser, and waits that explain themselves when they time out.

import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { after, before } from 'node:test';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '..', '..');
export const OUT_DIR = path.join(REPO, 'target', 'browser');
export const SERVER_BIN = process.env.SCANSTREAM_BIN || path.join(REPO, 'target', 'debug', 'scanstream');
export const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/** Generous limit of every wait: the machine is shared and noisy. */
export const WAIT_MS = 15_000;
/** Limit of one test, so that a hang fails instead of stalling the run. */
export const TEST_TIMEOUT_MS = 90_000;

/** Live (not leaving) rows of the opportunities table. */
export const LIVE_ROWS = '#opps tbody tr[data-key]:not(.leaving)';
/** The table draws at most this many rows, the first ones in the current order. */
export const ROWS_DRAWN = 100;

export const MARKET_SCANS = [
  'price_change', 'volume_spike', 'rsi_overbought', 'rsi_oversold',
  'new_high', 'new_low', 'sma_cross_up', 'sma_cross_down',
];

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------
// Server processes

const children = new Set();

function killAllChildren() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
// Last line of defence: no server outlives the test process.
process.on('exit', killAllChildren);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    killAllChildren();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

/** Records a pid for run.sh, which kills whatever is left when it exits. */
function notePid(pid) {
  const file = process.env.SCANSTREAM_BROWSER_PIDS;
  if (file) {
    try {
      fs.appendFileSync(file, `${pid}\n`);
    } catch {
      // best effort
    }
  }
}

/** A TCP port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function safeName(name) {
  return String(name).replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 80) || 'server';
}

/**
 * A fresh self-signed certificate for 127.0.0.1, made with openssl in a directory of its
 * own under target/browser/tls. Returns `{cert, key, spki}`: the PEM files, and the
 * base64 SHA-256 of the public key, which is what Chromium's
 * `--ignore-certificate-errors-spki-list` takes (see launchBrowser).
 */
export function makeCertificate(name) {
  const parent = path.join(OUT_DIR, 'tls');
  fs.mkdirSync(parent, { recursive: true });
  const dir = fs.mkdtempSync(path.join(parent, `${safeName(name)}-`));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', key, '-out', cert,
  ], { stdio: 'pipe' });
  const der = new crypto.X509Certificate(fs.readFileSync(cert)).publicKey.export({ type: 'spki', format: 'der' });
  return { cert, key, spki: crypto.createHash('sha256').update(der).digest('base64') };
}

/**
 * Starts `scanstream --listen 127.0.0.1:PORT` and resolves once it logs that it listens.
 * Its output goes to target/browser/logs/NAME.log. Returns
 * `{port, epoch, url, wsUrl, tls, proc, logFile, kill(signal), exited}`.
 * With `tls` the port speaks only TLS, with a certificate from makeCertificate (`tls` in
 * the result): `url` is https:// and `wsUrl` wss://.
 * With `t` (a node:test context) the server is killed when the test ends, pass or fail.
 */
export async function startServer(t, { name = 'server', port, args = [], retries = 3, tls = false } = {}) {
  const certificate = tls ? makeCertificate(name) : undefined;
  const tlsArgs = certificate ? ['--tls-cert', certificate.cert, '--tls-key', certificate.key] : [];
  let lastError;
  for (let attempt = 0; attempt <= retries; attempt++) {
    const p = port ?? (await freePort());
    try {
      const server = await spawnServer(name, p, [...args, ...tlsArgs], certificate);
      if (t) t.after(() => server.kill('SIGKILL'));
      return server;
    } catch (e) {
      lastError = e;
      if (!/in use|AddrInUse|os error 98/i.test(String(e.message))) break;
      await sleep(port === undefined ? 50 : 500); // a fixed port: wait for the old one to go
    }
  }
  throw lastError;
}

function spawnServer(name, port, args, certificate) {
  fs.mkdirSync(path.join(OUT_DIR, 'logs'), { recursive: true });
  const logFile = path.join(OUT_DIR, 'logs', `${safeName(name)}-${port}.log`);
  const log = fs.createWriteStream(logFile, { flags: 'a' });
  const argv = ['--listen', `127.0.0.1:${port}`, ...args];
  log.write(`# ${SERVER_BIN} ${argv.join(' ')}\n`);
  const proc = spawn(SERVER_BIN, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  children.add(proc);
  if (proc.pid) notePid(proc.pid);
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      children.delete(proc);
      resolve({ code, signal });
    });
  });
  let tail = '';
  let head = '';
  const secure = certificate ? 's' : '';
  const server = {
    port,
    url: `http${secure}://127.0.0.1:${port}`,
    wsUrl: `ws${secure}://127.0.0.1:${port}/stream`,
    tls: certificate,
    epoch: undefined,
    proc,
    logFile,
    exited,
    tail: () => tail,
    async kill(signal = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) {
        try {
          proc.kill(signal);
        } catch {
          // gone
        }
      }
      await Promise.race([exited, sleep(5_000)]);
      log.end();
    },
  };
  return new Promise((resolve, reject) => {
    let ready = false;
    const timer = setTimeout(() => {
      if (!ready) {
        proc.kill('SIGKILL');
        reject(new Error(`server on port ${port} did not log "listening" within ${WAIT_MS} ms; output:\n${tail}`));
      }
    }, WAIT_MS);
    const onData = (chunk) => {
      const text = chunk.toString();
      log.write(text);
      // Keep reading (a full pipe would stall the server) and keep a short tail for errors.
      tail = (tail + text).slice(-4000);
      if (!ready) {
        // Everything up to the "listening" line, however long the first chunk is.
        head += text;
        const m = head.match(/listening local_addr=127\.0\.0\.1:(\d+)[^\n]*?epoch=([^\s]+)[^\S\n]*\r?\n/);
        if (m && Number(m[1]) === port) {
          ready = true;
          head = '';
          server.epoch = m[2];
          clearTimeout(timer);
          resolve(server);
        }
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${SERVER_BIN}: ${e.message} (build it with cargo build --bin scanstream, or set SCANSTREAM_BIN)`));
    });
    exited.then(({ code, signal }) => {
      if (!ready) {
        clearTimeout(timer);
        reject(new Error(`server on port ${port} exited (code ${code}, signal ${signal}) before listening; output:\n${tail}`));
      }
    });
  });
}

// ---------------------------------------------------------------------------------------
// HTTP

export async function httpJson(server, pathAndQuery, { method = 'GET', body } = {}) {
  const res = await fetch(`${server.url}${pathAndQuery}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${pathAndQuery}: HTTP ${res.status}: ${text}`);
  return JSON.parse(text);
}

// ---------------------------------------------------------------------------------------
// A TCP proxy whose connections can all be cut at once

export async function startProxy(t, targetPort) {
  const pairs = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const done = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', done);
    upstream.on('error', done);
    client.on('close', done);
    upstream.on('close', done);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const proxy = {
    port: server.address().port,
    url: `http://127.0.0.1:${server.address().port}`,
    /** Destroys every open connection (both sides); returns how many were cut. */
    cut() {
      const n = pairs.size;
      for (const { client, upstream } of [...pairs]) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      return n;
    },
    close() {
      proxy.cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  if (t) t.after(() => proxy.close());
  return proxy;
}

// ---------------------------------------------------------------------------------------
// Browser and page

/**
 * Headless Chromium. With `trustSpki` (makeCertificate's `spki`) it accepts a server
 * certificate with exactly that key, and no other that fails verification: unlike
 * `--ignore-certificate-errors`, a wrong certificate is still refused.
 */
export function launchBrowser({ trustSpki } = {}) {
  const trust = trustSpki ? [`--ignore-certificate-errors-spki-list=${trustSpki}`] : [];
  return chromium.launch({
    executablePath: CHROMIUM_BIN,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', ...trust],
  });
}

/** One browser for the tests of a file: launched before them, closed after them. */
export function useBrowser() {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });
  return () => browser;
}

/**
 * A new context and page on `url`, collecting console errors, page errors and the URLs
 * of the WebSockets it opens. Closed when the test ends.
 */
export async function openDashboard(t, browser, url, contextOptions = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...contextOptions });
  if (t) t.after(() => context.close().catch(() => {}));
  const page = await context.newPage();
  const consoleErrors = [];
  const pageErrors = [];
  const webSockets = [];
  page.on('websocket', (ws) => webSockets.push(ws.url()));
  page.on('console', (msg) => {
    if (msg.type() === 'error') {
      const loc = msg.location();
      consoleErrors.push(`${msg.text()}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ''}`);
    }
  });
  page.on('pageerror', (err) => pageErrors.push(String(err && err.stack ? err.stack : err)));
  await page.goto(url, { waitUntil: 'load', timeout: WAIT_MS });
  return { context, page, consoleErrors, pageErrors, webSockets };
}

/**
 * Waits until `fn(arg)` is truthy in the page. On timeout the error names `what` and
 * shows what `describe` (a page function) reports at that moment.
 */
export async function waitInPage(page, what, fn, arg, { timeout = WAIT_MS, describe = pageSummary } = {}) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout, polling: 100 });
    const value = await handle.jsonValue().catch(() => undefined);
    await handle.dispose().catch(() => {});
    return value;
  } catch (e) {
    let observed = '(page not readable)';
    try {
      observed = JSON.stringify(await page.evaluate(describe, arg));
    } catch {
      // keep the placeholder
    }
    throw new Error(`timed out after ${timeout} ms waiting for ${what}; observed: ${observed}\n${e.message.split('\n')[0]}`);
  }
}

/** A compact picture of the page's state for error messages. */
export function pageSummary() {
  const q = (s) => document.querySelector(s);
  const text = (s) => (q(s) ? q(s).textContent.trim().slice(0, 80) : null);
  let stats = null;
  try {
    const s = window.scanstream && window.scanstream.stats();
    if (s) stats = { ...s, seqs: `[${s.seqs.length} seqs]` };
  } catch (e) {
    stats = `stats() threw ${e}`;
  }
  return {
    conn: q('#conn') ? q('#conn').getAttribute('data-state') : null,
    connText: text('#conn'),
    scannerState: text('#scanner-state'),
    liveRows: document.querySelectorAll('#opps tbody tr[data-key]:not(.leaving)').length,
    allRows: document.querySelectorAll('#opps tbody tr').length,
    oppCount: text('#opp-count'),
    unacked: text('#unacked-count'),
    alerts: document.querySelectorAll('#alerts li[data-alert-id]').length,
    filterError: text('#filter-error'),
    stats,
  };
}

/** The number in an element's text ("1,042" and "1 042" read as 1042); NaN when none. */
export function numberIn(text) {
  if (text == null) return NaN;
  const cleaned = String(text).replace(/[,\s\u00a0\u202f]/g, '');
  const m = cleaned.match(/-?\d+(\.\d+)?/);
  return m ? Number(m[0]) : NaN;
}

export async function stats(page) {
  return page.evaluate(() => window.scanstream.stats());
}

export async function waitLive(page, what = '#conn[data-state=live]') {
  await waitInPage(page, what, () => {
    const el = document.querySelector('#conn');
    return el && el.getAttribute('data-state') === 'live';
  });
}

export async function waitRows(page, min = 1) {
  return waitInPage(
    page,
    `at least ${min} live rows in #opps`,
    (n) => document.querySelectorAll('#opps tbody tr[data-key]:not(.leaving)').length >= n,
    min,
  );
}

/**
 * The page function behind waitCounts: `#opp-count` is the table model's size
 * (stats().rows), the drawn rows are min(100, that), and `#opp-more` says "100 of N"
 * exactly when rows are cut.
 */
export function countsAgree(drawnMax) {
  const live = document.querySelectorAll('#opps tbody tr[data-key]:not(.leaving)').length;
  const countText = (document.querySelector('#opp-count')?.textContent ?? '').replace(/[,\s\u00a0\u202f]/g, '');
  const count = /^\d+$/.test(countText) ? Number(countText) : NaN;
  const model = window.scanstream.stats().rows;
  const more = (document.querySelector('#opp-more')?.textContent ?? '').replace(/[,\u00a0\u202f]/g, '').trim();
  const m = more.match(/(\d+)\s+of\s+(\d+)/);
  const moreOk = count > drawnMax
    ? !!m && Number(m[1]) === drawnMax && Number(m[2]) === count
    : more === '';
  return count > 0 && count === model && live === Math.min(drawnMax, count) && moreOk;
}

export function countsState() {
  return {
    liveRows: document.querySelectorAll('#opps tbody tr[data-key]:not(.leaving)').length,
    oppCount: document.querySelector('#opp-count')?.textContent,
    oppMore: document.querySelector('#opp-more')?.textContent ?? null,
    statsRows: window.scanstream.stats().rows,
  };
}

/** Waits until #opp-count, stats().rows, the drawn rows and #opp-more agree. */
export async function waitCounts(page, when = '') {
  await waitInPage(
    page,
    `#opp-count = stats().rows > 0, live rows = min(${ROWS_DRAWN}, #opp-count), #opp-more "${ROWS_DRAWN} of N" only when cut${when}`,
    countsAgree,
    ROWS_DRAWN,
    { describe: countsState },
  );
}

/** Live rows as plain objects, read in one go. */
export async function readRows(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('#opps tbody tr[data-key]:not(.leaving)')].map((tr) => ({
      key: tr.getAttribute('data-key'),
      symbol: tr.getAttribute('data-symbol'),
      scan: tr.getAttribute('data-scan'),
      score: tr.getAttribute('data-score'),
      price: tr.getAttribute('data-price'),
      change: tr.getAttribute('data-change'),
      volumeRatio: tr.getAttribute('data-volume-ratio'),
    })),
  );
}

export function duplicateKeys(rows) {
  const seen = new Set();
  const dups = new Set();
  for (const r of rows) {
    if (seen.has(r.key)) dups.add(r.key);
    seen.add(r.key);
  }
  return [...dups];
}

/** Page errors, and console errors unless `allowConsole`, must be none. */
export function assertNoErrors(assert, opened, { allowConsole = false } = {}) {
  assert.deepEqual(opened.pageErrors, [], `uncaught page errors:\n${opened.pageErrors.join('\n')}`);
  if (!allowConsole) {
    assert.deepEqual(opened.consoleErrors, [], `console errors:\n${opened.consoleErrors.join('\n')}`);
  }
}

/**
 * The server's own active opportunities: a snapshot over a WebSocket that the test
 * opens from inside the page, to the page's origin (the page's own connection is not touched).
 * Resolves to [{key, score, price, change_pct, volume_ratio}].
 */
export async function serverSnapshot(page, filters = {}) {
  return page.evaluate(
    (filters) =>
      new Promise((resolve, reject) => {
        // The page's own origin: its content security policy allows no other.
        const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/stream`;
        const ws = new WebSocket(url);
        const timer = setTimeout(() => {
          ws.close();
          reject(new Error('no snapshot within 10 s'));
        }, 10_000);
        ws.onopen = () =>
          ws.send(JSON.stringify({
            type: 'subscribe',
            id: 'truth',
            data: { subscription: 'truth', filters, snapshot: true },
          }));
        ws.onmessage = (e) => {
          const m = JSON.parse(e.data);
          if (m.type === 'snapshot') {
            clearTimeout(timer);
            ws.close();
            resolve(m.data.results.map((r) => ({
              key: `${r.symbol}/${r.scan}`, score: r.score, price: r.price,
              change_pct: r.change_pct, volume_ratio: r.volume_ratio,
            })));
          } else if (m.type === 'error') {
            clearTimeout(timer);
            ws.close();
            reject(new Error(`snapshot refused: ${e.data}`));
          }
        };
        ws.onerror = () => {
          clearTimeout(timer);
          reject(new Error(`WebSocket to ${url} failed`));
        };
      }),
    filters,
  );
}

/**
 * Stops the scanner over HTTP so that nothing changes any more, lets in-flight messages
 * and leaving rows settle, then checks the table against the server's set of active
 * opportunities: the model holds as many as the server (stats().rows, #opp-count), and
 * the drawn rows are the first min(100, N) of them in the current sort order, with the
 * server's latest scores and prices. `filters` are the page's own, so a filtered table
 * is held against a snapshot with the same filters.
 */
export async function assertTableMatchesServer(assert, page, server, filters = {}) {
  const status = await httpJson(server, '/stream/stop', { method: 'POST' });
  assert.equal(status.state, 'stopped', 'POST /stream/stop answers state stopped');
  await waitInPage(page, '#scanner-state to read stopped', () => {
    const el = document.querySelector('#scanner-state');
    return el && el.textContent.trim() === 'stopped';
  });
  // In-flight results, and the ~0.6 s removal of rows that were cleared.
  await sleep(1_500);
  const truth = await serverSnapshot(page, filters);
  const view = await page.evaluate(() => {
    const th = document.querySelector('#opps th[data-sort][aria-sort="descending"], #opps th[data-sort][aria-sort="ascending"]');
    return {
      sort: th ? { field: th.getAttribute('data-sort'), dir: th.getAttribute('aria-sort') } : null,
      count: (document.querySelector('#opp-count')?.textContent ?? '').trim(),
      model: window.scanstream.stats().rows,
    };
  });
  const rows = await readRows(page);
  assert.deepEqual(duplicateKeys(rows), [], 'no data-key appears twice among live rows');
  assert.equal(view.model, truth.length, `stats().rows is the server's number of active opportunities`);
  assert.equal(numberIn(view.count), truth.length, `#opp-count is the server's number of active opportunities`);
  assert.equal(rows.length, Math.min(ROWS_DRAWN, truth.length), `min(${ROWS_DRAWN}, N) rows are drawn`);

  const want = new Map(truth.map((r) => [r.key, r]));
  const extra = rows.map((r) => r.key).filter((k) => !want.has(k));
  assert.deepEqual(extra.slice(0, 20), [], `${extra.length} drawn rows are not active on the server`);

  // The drawn rows are the first ones in the current order (ties may fall either way).
  assert.ok(view.sort, 'one header carries aria-sort');
  const attr = { score: 'score', change_pct: 'change', volume_ratio: 'volumeRatio' }[view.sort.field];
  assert.ok(attr, `the active sort is a known column (${view.sort.field})`);
  const drawn = new Set(rows.map((r) => r.key));
  const drawnValues = rows.map((r) => Number(r[attr]));
  const hiddenValues = truth.filter((r) => !drawn.has(r.key)).map((r) => r[view.sort.field] ?? 0);
  if (hiddenValues.length > 0) {
    if (view.sort.dir === 'descending') {
      assert.ok(Math.min(...drawnValues) >= Math.max(...hiddenValues),
        `drawn rows are the top by ${view.sort.field}: lowest drawn ${Math.min(...drawnValues)}, highest hidden ${Math.max(...hiddenValues)}`);
    } else {
      assert.ok(Math.max(...drawnValues) <= Math.min(...hiddenValues),
        `drawn rows are the bottom by ${view.sort.field}: highest drawn ${Math.max(...drawnValues)}, lowest hidden ${Math.min(...hiddenValues)}`);
    }
  }

  const close = (a, b) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));
  const stale = [];
  for (const r of rows) {
    const w = want.get(r.key);
    if (!close(Number(r.score), w.score) || !close(Number(r.price), w.price)) {
      stale.push({ key: r.key, shown: { score: r.score, price: r.price }, server: { score: w.score, price: w.price } });
    }
  }
  assert.deepEqual(stale.slice(0, 10), [], `${stale.length} rows show other values than the server's latest`);
  return { rows: rows.length, active: truth.length };
}
