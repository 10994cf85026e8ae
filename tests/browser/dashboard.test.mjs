// The dashboard against a live server: loading, the table, sorting, filters, start and
// stop, acknowledging alerts, the same page over https. Each test has its own server and
// browser context.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  LIVE_ROWS,
  MARKET_SCANS,
  TEST_TIMEOUT_MS,
  WAIT_MS,
  assertNoErrors,
  assertTableMatchesServer,
  duplicateKeys,
  httpJson,
  launchBrowser,
  numberIn,
  openDashboard,
  readRows,
  sleep,
  startServer,
  stats,
  waitCounts,
  waitInPage,
  waitLive,
  waitRows,
  useBrowser,
} from './helpers.mjs';

const browser = useBrowser();

const opts = { timeout: TEST_TIMEOUT_MS };

describe('dashboard', () => {
  test('loads without errors, goes live and fills in the scanner status', opts, async (t) => {
    const server = await startServer(t, { name: 'loads' });
    const opened = await openDashboard(t, browser(), `${server.url}/`);
    const { page } = opened;

    const html = await (await fetch(`${server.url}/`)).text();
    assert.match(html, /dashboard\.js/, 'GET / serves the page that loads dashboard.js');
    for (const asset of ['/dashboard.css', '/dashboard.js']) {
      const res = await fetch(`${server.url}${asset}`);
      assert.equal(res.status, 200, `GET ${asset}`);
    }

    await page.waitForSelector('#conn[data-state="live"]', { timeout: 15_000 });
    await waitInPage(page, 'the scanner status fields to fill in', () => {
      const text = (s) => (document.querySelector(s)?.textContent ?? '').trim();
      const num = (s) => Number(text(s).replace(/[,\s\u00a0\u202f]/g, '').match(/-?\d+(\.\d+)?/)?.[0] ?? NaN);
      const progress = document.querySelector('#progress');
      return (
        text('#scanner-state') === 'running' &&
        document.querySelector('#scanner-state').getAttribute('data-state') === 'running' &&
        num('#cycle') >= 1 &&
        Number.isFinite(num('#cycle-ms')) &&
        num('#results-total') > 0 &&
        num('#subscribers') >= 1 &&
        progress instanceof HTMLProgressElement &&
        progress.max === 500 &&
        progress.value >= 0 && progress.value <= progress.max &&
        /\d/.test(text('#lat-p50')) && /ms/.test(text('#lat-p50')) &&
        /\d/.test(text('#lat-p99')) && /ms/.test(text('#lat-p99')) &&
        /^\d+(\.\d)? ms$/.test(text('#lag')) &&
        /\d/.test(text('#rate-now')) &&
        document.querySelector('canvas#rate') !== null &&
        document.querySelectorAll('#feed li[data-seq][data-event]').length > 0
      );
    }, undefined, {
      describe: () => {
        const text = (s) => (document.querySelector(s) ? document.querySelector(s).textContent.trim() : null);
        const p = document.querySelector('#progress');
        return {
          scannerState: text('#scanner-state'),
          scannerDataState: document.querySelector('#scanner-state')?.getAttribute('data-state'),
          cycle: text('#cycle'), cycleMs: text('#cycle-ms'), resultsTotal: text('#results-total'),
          subscribers: text('#subscribers'),
          progress: p ? { tag: p.tagName, value: p.value, max: p.max } : null,
          latP50: text('#lat-p50'), latP99: text('#lat-p99'), lag: text('#lag'), rateNow: text('#rate-now'),
          canvas: !!document.querySelector('canvas#rate'),
          feedItems: document.querySelectorAll('#feed li[data-seq][data-event]').length,
        };
      },
    });

    // The feed: newest first, at most 100 items, known event names.
    await waitInPage(page, '#feed to fill up to its cap of 100', () =>
      document.querySelectorAll('#feed li[data-seq]').length >= 100);
    const feed = await page.evaluate(() =>
      [...document.querySelectorAll('#feed li[data-seq]')].map((li) => ({
        seq: Number(li.getAttribute('data-seq')),
        event: li.getAttribute('data-event'),
      })));
    assert.ok(feed.length <= 100, `#feed holds at most 100 items, has ${feed.length}`);
    for (const item of feed) {
      assert.ok(Number.isInteger(item.seq), `feed data-seq is an integer: ${JSON.stringify(item)}`);
      assert.ok(['new', 'update', 'clear'].includes(item.event), `feed data-event is known: ${JSON.stringify(item)}`);
    }
    for (let i = 1; i < feed.length; i++) {
      assert.ok(feed[i - 1].seq > feed[i].seq, `#feed is newest first: seq ${feed[i - 1].seq} before ${feed[i].seq}`);
    }

    const s = await stats(page);
    for (const field of ['epoch', 'lastSeq', 'received', 'duplicates', 'gaps', 'reconnects', 'rows', 'seqs', 'state']) {
      assert.ok(field in s, `stats() has ${field}`);
    }
    assert.equal(s.epoch, server.epoch, 'stats().epoch is the server run\'s epoch');
    assert.ok(s.received > 0, 'stats().received counts results');
    assert.ok(Array.isArray(s.seqs) && s.seqs.length > 0, 'stats().seqs lists result seqs');
    assert.equal(s.seqs[s.seqs.length - 1], s.lastSeq, 'the last of stats().seqs is stats().lastSeq');

    // Let it run for a moment: updates must not throw or log errors either.
    await sleep(1_500);
    assertNoErrors(assert, opened);
  });

  test('rows appear with numeric data, a matching count, no duplicates, and sort by score', opts, async (t) => {
    const server = await startServer(t, { name: 'rows' });
    const opened = await openDashboard(t, browser(), `${server.url}/`);
    const { page } = opened;
    await waitLive(page);
    await waitRows(page, 5);

    const rows = await readRows(page);
    assert.ok(rows.length > 0, 'live rows > 0');
    for (const r of rows) {
      for (const attr of ['score', 'price', 'change', 'volumeRatio']) {
        assert.ok(r[attr] !== null && r[attr].trim() !== '' && Number.isFinite(Number(r[attr])),
          `row ${r.key}: data-${attr === 'volumeRatio' ? 'volume-ratio' : attr}="${r[attr]}" is a number`);
      }
      assert.equal(r.key, `${r.symbol}/${r.scan}`, 'data-key is SYMBOL/scan');
      assert.ok(MARKET_SCANS.includes(r.scan), `row ${r.key}: data-scan is a market scan`);
    }
    assert.deepEqual(duplicateKeys(rows), [], 'no data-key appears twice among live rows');

    const cells = await page.evaluate((sel) => {
      const tr = document.querySelector(sel);
      return ['sym', 'scan', 'score', 'price', 'chg', 'vr', 'rsi'].filter((c) => !tr.querySelector(`td.${c}`));
    }, LIVE_ROWS);
    assert.deepEqual(cells, [], 'a row has the cells td.sym, td.scan, td.score, td.price, td.chg, td.vr, td.rsi');

    await waitCounts(page);

    // Rows ordered by a column's data attribute, with its header carrying aria-sort.
    const ordered = ({ column, attr, dir }) => {
      const th = document.querySelector(`#opps th[data-sort="${column}"]`);
      if (!th || th.getAttribute('aria-sort') !== dir) return false;
      const values = [...document.querySelectorAll('#opps tbody tr[data-key]:not(.leaving)')]
        .map((tr) => Number(tr.getAttribute(attr)));
      if (values.length < 2) return false;
      for (let i = 1; i < values.length; i++) {
        if (dir === 'descending' ? values[i - 1] < values[i] : values[i - 1] > values[i]) return false;
      }
      return true;
    };
    const sortState = ({ column, attr }) => {
      const th = document.querySelector(`#opps th[data-sort="${column}"]`);
      const values = [...document.querySelectorAll('#opps tbody tr[data-key]:not(.leaving)')]
        .map((tr) => Number(tr.getAttribute(attr)));
      return { ariaSort: th?.getAttribute('aria-sort'), first: values.slice(0, 12), count: values.length };
    };
    const expectOrder = async (column, attr, dir, when) => {
      const arg = { column, attr, dir };
      await waitInPage(page, `rows ordered by ${attr} ${dir} ${when}`, ordered, arg, { describe: sortState });
      // Still ordered a while later, with updates and new rows having come in meanwhile.
      await sleep(1_500);
      await waitInPage(page, `rows still ordered by ${attr} ${dir} 1.5 s later`, ordered, arg, { describe: sortState });
    };

    // Another column first, so that score is not the active sort when it is clicked.
    await page.click('#opps th[data-sort="change_pct"]');
    await expectOrder('change_pct', 'data-change', 'descending', 'after clicking Change %');
    await page.click('#opps th[data-sort="score"]');
    await expectOrder('score', 'data-score', 'descending', 'after one click on Score');
    const inactive = await page.getAttribute('#opps th[data-sort="change_pct"]', 'aria-sort');
    assert.ok(inactive === null || inactive === 'none', `only the active header carries aria-sort (Change % has "${inactive}")`);
    await page.click('#opps th[data-sort="score"]');
    await expectOrder('score', 'data-score', 'ascending', 'after a second click on Score');

    assert.deepEqual(duplicateKeys(await readRows(page)), [], 'no data-key appears twice among live rows after sorting');

    // The table is the server's truth: with the scanner stopped, its active set (top 100 drawn).
    await assertTableMatchesServer(assert, page, server);
    assertNoErrors(assert, opened);
  });

  test('a filter narrows the rows to what it matches, and reset widens them again', opts, async (t) => {
    const server = await startServer(t, { name: 'filter' });
    const opened = await openDashboard(t, browser(), `${server.url}/`);
    const { page } = opened;
    await waitLive(page);
    await waitRows(page, 20);

    await waitCounts(page, ' before filtering');
    const rows = (await readRows(page)).map((r) => ({ ...r, score: Number(r.score) }));
    const before = numberIn(await page.textContent('#opp-count'));
    const byScan = new Map();
    for (const r of rows) byScan.set(r.scan, (byScan.get(r.scan) ?? 0) + 1);
    const ranked = [...byScan.entries()].sort((a, b) => b[1] - a[1]).map(([scan]) => scan);
    const chosen = ranked.slice(0, ranked.length >= 3 ? 2 : 1);
    const scores = rows.filter((r) => chosen.includes(r.scan)).map((r) => r.score).sort((a, b) => a - b);
    // One decimal, as a person would type it.
    const minScore = Math.floor(scores[Math.floor(scores.length / 2)] * 10) / 10;
    t.diagnostic(`before: ${before} opportunities, ${rows.length} drawn; filter: scans ${chosen.join(',')} min_score ${minScore}`);

    await page.fill('#filters [name="min_score"]', String(minScore));
    for (const scan of chosen) await page.check(`#filters [name="scans"][value="${scan}"]`);
    await page.click('#filters button[type="submit"]');

    const matches = ({ chosen, minScore, before }) => {
      const trs = [...document.querySelectorAll('#opps tbody tr[data-key]:not(.leaving)')];
      const count = Number((document.querySelector('#opp-count')?.textContent ?? '').replace(/[,\s\u00a0\u202f]/g, ''));
      return trs.length > 0 && count > 0 && count < before &&
        trs.every((tr) => Number(tr.getAttribute('data-score')) >= minScore && chosen.includes(tr.getAttribute('data-scan')));
    };
    const filterState = ({ chosen, minScore }) => {
      const trs = [...document.querySelectorAll('#opps tbody tr[data-key]:not(.leaving)')];
      const bad = trs.filter((tr) => !(Number(tr.getAttribute('data-score')) >= minScore && chosen.includes(tr.getAttribute('data-scan'))))
        .slice(0, 5).map((tr) => `${tr.getAttribute('data-key')} score ${tr.getAttribute('data-score')}`);
      return {
        liveRows: trs.length,
        oppCount: document.querySelector('#opp-count')?.textContent,
        notMatching: bad,
        filterError: document.querySelector('#filter-error')?.textContent,
      };
    };
    const arg = { chosen, minScore, before };
    await waitInPage(page, `every live row to have scan in [${chosen}] and score >= ${minScore}, #opp-count below ${before}`, matches, arg, { describe: filterState });
    await waitCounts(page, ' under the filter');
    assert.equal((await page.textContent('#filter-error')).trim(), '', '#filter-error is empty for a good filter');

    // New results go on arriving, and every one shown still matches.
    const received = (await stats(page)).received;
    await waitInPage(page, 'more results to arrive under the filter', (n) => window.scanstream.stats().received > n, received);
    await sleep(1_000);
    const after = await page.evaluate(filterState, arg);
    assert.deepEqual(after.notMatching, [], `every live row matches the filter a while later (${after.liveRows} rows)`);
    assert.deepEqual(duplicateKeys(await readRows(page)), [], 'no duplicate data-key under the filter');
    // Rows whose updates dropped below the filter left the table (`left`): it equals a
    // fresh snapshot with the same filters.
    await sleep(4_000);
    await assertTableMatchesServer(assert, page, server, { scans: chosen, min_score: minScore });
    await httpJson(server, '/stream/start', { method: 'POST' });

    // Reset: the filters are cleared and other scans come back.
    await page.click('#filter-reset');
    const inputs = await page.evaluate(() => ({
      minScore: document.querySelector('#filters [name="min_score"]').value,
      checked: document.querySelectorAll('#filters [name="scans"]:checked').length,
      symbols: document.querySelector('#filters [name="symbols"]').value,
    }));
    assert.deepEqual(inputs, { minScore: '', checked: 0, symbols: '' }, '#filter-reset clears the inputs');
    await waitInPage(page, 'rows of other scans or lower scores to come back after reset', ({ chosen, minScore }) =>
      [...document.querySelectorAll('#opps tbody tr[data-key]:not(.leaving)')]
        .some((tr) => Number(tr.getAttribute('data-score')) < minScore || !chosen.includes(tr.getAttribute('data-scan'))),
    arg);
    assertNoErrors(assert, opened);
  });

  test('a filter the server refuses shows its error and leaves the subscription as it was', opts, async (t) => {
    const server = await startServer(t, { name: 'bad-filter' });
    const opened = await openDashboard(t, browser(), `${server.url}/`);
    const { page } = opened;
    await waitLive(page);
    await waitRows(page, 10);
    const rowsBefore = (await readRows(page)).length;

    // PROTOCOL: min_price above max_price is a bad_filter.
    await page.fill('#filters [name="min_price"]', '500');
    await page.fill('#filters [name="max_price"]', '5');
    await page.click('#filters button[type="submit"]');
    await waitInPage(page, '#filter-error to show the refusal', () =>
      (document.querySelector('#filter-error')?.textContent ?? '').trim() !== '');
    t.diagnostic(`#filter-error: ${(await page.textContent('#filter-error')).trim()}`);

    // Unchanged subscription: results keep coming, and the rows (all prices) stay.
    const received = (await stats(page)).received;
    await waitInPage(page, 'results to keep arriving after the refused filter', (n) => window.scanstream.stats().received > n + 50, received);
    const rows = await readRows(page);
    assert.ok(rows.length >= Math.min(10, rowsBefore), `the table was kept (${rows.length} rows, ${rowsBefore} before)`);
    assert.ok(rows.some((r) => Number(r.price) > 5),
      'rows above max_price 5 are still shown: the refused filter was not applied');

    // A good filter clears the error.
    await page.fill('#filters [name="min_price"]', '');
    await page.fill('#filters [name="max_price"]', '');
    await page.click('#filters button[type="submit"]');
    await waitInPage(page, '#filter-error to be empty again after a good filter', () =>
      (document.querySelector('#filter-error')?.textContent ?? '').trim() === '');
    await waitRows(page, 1);
    assertNoErrors(assert, opened, { allowConsole: true });
  });

  test('Stop halts the results and Start resumes them', opts, async (t) => {
    const server = await startServer(t, { name: 'stop-start' });
    const opened = await openDashboard(t, browser(), `${server.url}/`);
    const { page } = opened;
    await waitLive(page);
    await waitRows(page, 1);
    await waitInPage(page, '#scanner-state running', () =>
      document.querySelector('#scanner-state')?.textContent.trim() === 'running');

    await page.click('#stop');
    await waitInPage(page, '#scanner-state to read stopped (text and data-state)', () => {
      const el = document.querySelector('#scanner-state');
      return el && el.textContent.trim() === 'stopped' && el.getAttribute('data-state') === 'stopped';
    });
    assert.equal((await httpJson(server, '/stream/status')).state, 'stopped', 'the server says stopped');

    await sleep(1_000); // results already in flight
    const r0 = (await stats(page)).received;
    const total0 = (await httpJson(server, '/stream/status')).results_total;
    await sleep(2_500);
    const r1 = (await stats(page)).received;
    const total1 = (await httpJson(server, '/stream/status')).results_total;
    assert.equal(total1, total0, 'the server published no results while stopped');
    assert.ok(r1 - r0 <= 0, `no results arrived while stopped (received ${r0} -> ${r1})`);

    await page.click('#start');
    await waitInPage(page, '#scanner-state to read running again', () => {
      const el = document.querySelector('#scanner-state');
      return el && el.textContent.trim() === 'running' && el.getAttribute('data-state') === 'running';
    });
    assert.equal((await httpJson(server, '/stream/status')).state, 'running', 'the server says running');
    await waitInPage(page, 'results to arrive again after Start', (n) => window.scanstream.stats().received > n + 10, r1);
    assertNoErrors(assert, opened);
  });

  test('acknowledging an alert updates the page and the server', opts, async (t) => {
    const server = await startServer(t, { name: 'ack' });
    const opened = await openDashboard(t, browser(), `${server.url}/`);
    const { page } = opened;
    await waitLive(page);
    await page.waitForSelector('#alerts li.unacked[data-alert-id] button.ack', { timeout: 15_000 });

    // Stop the scanner so that no new alert moves the count while we look.
    await httpJson(server, '/stream/stop', { method: 'POST' });
    await waitInPage(page, '#scanner-state to read stopped', () =>
      document.querySelector('#scanner-state')?.textContent.trim() === 'stopped');
    await sleep(1_000);

    const serverUnacked = await httpJson(server, '/alerts?unacked=true&limit=1000');
    assert.ok(serverUnacked.length > 0, 'the server has unacknowledged alerts');
    await waitInPage(page, `#unacked-count to equal the server's ${serverUnacked.length} unacknowledged alerts`,
      (n) => Number((document.querySelector('#unacked-count')?.textContent ?? '').replace(/[,\s\u00a0\u202f]/g, '')) === n,
      serverUnacked.length);
    const count0 = numberIn(await page.textContent('#unacked-count'));

    const li = page.locator('#alerts li.unacked[data-alert-id]').filter({ has: page.locator('button.ack') }).first();
    const id = await li.getAttribute('data-alert-id');
    assert.ok(id, 'an unacknowledged alert has a data-alert-id');
    assert.ok(serverUnacked.some((a) => a.alert_id === id), `alert ${id} is unacknowledged on the server too`);
    await li.locator('button.ack').click();

    await waitInPage(page, `alert ${id} to lose class unacked`, (id) => {
      const el = [...document.querySelectorAll('#alerts li[data-alert-id]')].find((e) => e.getAttribute('data-alert-id') === id);
      return el && !el.classList.contains('unacked');
    }, id);
    await waitInPage(page, `#unacked-count to drop from ${count0} to ${count0 - 1}`,
      (n) => Number((document.querySelector('#unacked-count')?.textContent ?? '').replace(/[,\s\u00a0\u202f]/g, '')) === n,
      count0 - 1);

    const all = await httpJson(server, '/alerts?limit=1000');
    const alert = all.find((a) => a.alert_id === id);
    assert.ok(alert, `GET /alerts lists alert ${id}`);
    assert.equal(alert.acknowledged, true, `the server has alert ${id} acknowledged`);
    const unacked = await httpJson(server, '/alerts?unacked=true&limit=1000');
    assert.ok(!unacked.some((a) => a.alert_id === id), `alert ${id} is no longer among the server's unacknowledged`);
    assert.equal(unacked.length, count0 - 1, 'the server has one unacknowledged alert fewer');
    assert.equal(numberIn(await page.textContent('#unacked-count')), unacked.length,
      '#unacked-count equals the server\'s number of unacknowledged alerts');

    // An acknowledgment made elsewhere (HTTP) reaches the page as well.
    const other = unacked.find((a) => a.alert_id !== id);
    if (other) {
      await httpJson(server, `/alerts/${encodeURIComponent(other.alert_id)}/ack`, { method: 'POST' });
      await waitInPage(page, `#unacked-count to drop to ${count0 - 2} after an HTTP ack of ${other.alert_id}`,
        (n) => Number((document.querySelector('#unacked-count')?.textContent ?? '').replace(/[,\s\u00a0\u202f]/g, '')) === n,
        count0 - 2);
    }
    assertNoErrors(assert, opened);
  });

  test('with a token: the page takes it from its address, and refuses to spin without it', opts, async (t) => {
    const token = 'browser-test-token-42';
    const server = await startServer(t, { name: 'token', args: ['--token', token] });

    const withToken = await openDashboard(t, browser(), `${server.url}/?token=${token}`);
    const { page } = withToken;
    await waitLive(page);
    await waitRows(page, 1);
    // Its HTTP calls carry the token too: the alerts load and Stop works.
    await waitInPage(page, 'alerts to load with the token', () =>
      document.querySelectorAll('#alerts li').length > 0);
    await page.click('#stop');
    await waitInPage(page, '#scanner-state to read stopped', () =>
      document.querySelector('#scanner-state')?.textContent.trim() === 'stopped');
    const res = await fetch(`${server.url}/stream/status`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal((await res.json()).state, 'stopped', 'the POST with the token reached the server');
    // The token left the address bar, and the tab still has it after a reload.
    assert.ok(!page.url().includes(token), `the address still shows the token: ${page.url()}`);
    await page.reload();
    await waitLive(page);
    assertNoErrors(assert, withToken);

    // `#token=` works as well, and stays out of requests altogether.
    const viaHash = await openDashboard(t, browser(), `${server.url}/#token=${token}`);
    await waitLive(viaHash.page);

    // Without it the upgrade is refused (401); the page says why and stops retrying.
    const without = await openDashboard(t, browser(), `${server.url}/`);
    await waitInPage(without.page, '#conn to say closed: unauthorized', () => {
      const el = document.querySelector('#conn');
      return el?.dataset.state === 'closed' && /unauthorized/.test(el.textContent);
    });
    const refused = await fetch(`${server.url}/alerts`);
    assert.equal(refused.status, 401, 'the server refuses /alerts without the token');
  });

  test('over https: the page and its WebSocket (wss://) are one TLS origin, and rows go live', opts, async (t) => {
    const server = await startServer(t, { name: 'https', tls: true });
    // The shared browser does not know the certificate, so the trust below is what lets
    // the page in.
    const wary = await browser().newContext();
    t.after(() => wary.close().catch(() => {}));
    await assert.rejects((await wary.newPage()).goto(`${server.url}/`, { timeout: WAIT_MS }), /ERR_CERT/,
      'a browser that does not trust the key refuses the page');

    const trusting = await launchBrowser({ trustSpki: server.tls.spki });
    t.after(() => trusting.close());
    const opened = await openDashboard(t, trusting, `${server.url}/`);
    const { page } = opened;
    await waitLive(page);
    assert.equal(await page.evaluate(() => location.origin), server.url, 'the page is served over https');
    assert.deepEqual(opened.webSockets, [server.wsUrl], 'its one WebSocket is wss:// to the same origin');

    await waitRows(page, 5);
    await waitCounts(page);
    const rows = await readRows(page);
    for (const r of rows) {
      assert.ok(Number.isFinite(Number(r.score)) && Number.isFinite(Number(r.price)),
        `row ${r.key}: score "${r.score}" and price "${r.price}" are numbers`);
    }
    assert.deepEqual(duplicateKeys(rows), [], 'no data-key appears twice among live rows');
    // Live results, not only the snapshot the table starts from.
    await waitInPage(page, 'a live result over wss:// (stats().received > 0)', () =>
      window.scanstream.stats().received > 0);
    assert.equal((await stats(page)).epoch, server.epoch, 'stats().epoch is the server run\'s epoch');
    assertNoErrors(assert, opened);
  });
});
