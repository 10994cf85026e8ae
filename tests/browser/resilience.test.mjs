// The dashboard through broken connections: resumes that lose nothing, and a server that
// dies and comes back as a new run. Console errors are expected here (failed WebSocket
// connections), so only uncaught page errors count.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  TEST_TIMEOUT_MS,
  assertNoErrors,
  assertTableMatchesServer,
  duplicateKeys,
  openDashboard,
  readRows,
  sleep,
  startProxy,
  startServer,
  stats,
  waitInPage,
  waitCounts,
  waitLive,
  waitRows,
  useBrowser,
} from './helpers.mjs';

const browser = useBrowser();

const opts = { timeout: TEST_TIMEOUT_MS };

/** Where `seqs` is not a run of consecutive numbers: [{at, prev, next}]. */
function breaks(seqs) {
  const out = [];
  for (let i = 1; i < seqs.length; i++) {
    if (seqs[i] !== seqs[i - 1] + 1) out.push({ at: i, prev: seqs[i - 1], next: seqs[i] });
  }
  return out;
}

describe('dashboard resilience', () => {
  test('resumes through three cut connections without losing or repeating a result', opts, async (t) => {
    const server = await startServer(t, { name: 'resume-cut' });
    const proxy = await startProxy(t, server.port);
    const opened = await openDashboard(t, browser(), `${proxy.url}/`);
    const { page } = opened;
    await waitLive(page);
    await waitRows(page, 1);
    await waitInPage(page, 'the first results', () => window.scanstream.stats().seqs.length > 0);
    const first = await stats(page);
    assert.equal(first.epoch, server.epoch, 'stats().epoch is the server run\'s epoch');

    const cutAt = [];
    for (let i = 1; i <= 3; i++) {
      await sleep(1_500);
      const s = await stats(page);
      cutAt.push(s.lastSeq);
      const cut = proxy.cut();
      assert.ok(cut >= 1, `cut ${i}: the page had a connection through the proxy`);
      await waitInPage(page, `cut ${i}: #conn live again with stats().reconnects > ${s.reconnects}`, (r) =>
        window.scanstream.stats().reconnects > r &&
        document.querySelector('#conn')?.getAttribute('data-state') === 'live', s.reconnects);
      await waitInPage(page, `cut ${i}: results after seq ${s.lastSeq} to arrive`, (seq) =>
        window.scanstream.stats().lastSeq > seq + 20, s.lastSeq);
    }
    await sleep(1_000);

    const s = await stats(page);
    t.diagnostic(`seqs ${s.seqs[0]}..${s.seqs[s.seqs.length - 1]} (${s.seqs.length}), cut at ${cutAt.join(', ')}, reconnects ${s.reconnects}`);
    assert.equal(s.epoch, server.epoch, 'the epoch did not change');
    assert.equal(s.reconnects, 3, 'three cuts, three reconnections');
    assert.equal(s.duplicates, 0, 'no duplicate results');
    assert.equal(s.gaps, 0, 'every resume recovered');
    assert.ok(s.seqs.length > 0, 'seqs were recorded');
    assert.ok(s.seqs[0] <= cutAt[0], `seqs reach back before the first cut (first ${s.seqs[0]}, cut at ${cutAt[0]})`);
    assert.ok(s.seqs[s.seqs.length - 1] > cutAt[2], 'seqs go on past the last cut');
    assert.equal(s.seqs[s.seqs.length - 1], s.lastSeq, 'the last of seqs is lastSeq');
    assert.deepEqual(breaks(s.seqs).slice(0, 10), [], 'seqs go up by exactly one: no gap, no repeat, no reordering');
    assert.deepEqual(duplicateKeys(await readRows(page)), [], 'no data-key appears twice among live rows');

    await assertTableMatchesServer(assert, page, server);
    assertNoErrors(assert, opened, { allowConsole: true });
  });

  test('a killed server that comes back as a new run: the page reconnects and rebuilds its table', opts, async (t) => {
    const first = await startServer(t, { name: 'restart-first' });
    const opened = await openDashboard(t, browser(), `${first.url}/`);
    const { page } = opened;
    await waitLive(page);
    await waitRows(page, 1);
    const s0 = await stats(page);
    assert.equal(s0.epoch, first.epoch, 'stats().epoch is the first run\'s epoch');

    await first.kill('SIGKILL');
    await waitInPage(page, '#conn to leave live after the server was killed', () =>
      document.querySelector('#conn')?.getAttribute('data-state') !== 'live');
    const state = await page.getAttribute('#conn', 'data-state');
    assert.ok(['reconnecting', 'connecting'].includes(state), `#conn data-state is reconnecting, not "${state}"`);

    // Same port, another market (seed), so that rows left over from the old run show up.
    const second = await startServer(t, { name: 'restart-second', port: first.port, args: ['--sim-seed', '2'] });
    assert.notEqual(second.epoch, first.epoch, 'the new run has a new epoch');
    await waitInPage(page, `live again on epoch ${second.epoch} with stats().gaps > ${s0.gaps}`, ({ epoch, gaps }) => {
      const s = window.scanstream.stats();
      return document.querySelector('#conn')?.getAttribute('data-state') === 'live' && s.epoch === epoch && s.gaps > gaps;
    }, { epoch: second.epoch, gaps: s0.gaps });
    const s1 = await stats(page);
    assert.ok(s1.gaps >= 1, 'a new epoch counts as a gap (recovered: false)');
    assert.ok(s1.reconnects >= 1, 'stats().reconnects counts the reconnection');

    await waitRows(page, 1);
    assert.deepEqual(duplicateKeys(await readRows(page)), [], 'no data-key appears twice among live rows');
    await waitCounts(page, ' after the restart');

    // Nothing of the old run is left: the table is the new server's active set.
    await assertTableMatchesServer(assert, page, second);
    assertNoErrors(assert, opened, { allowConsole: true });
  });
});
