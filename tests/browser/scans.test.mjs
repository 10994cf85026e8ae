// Scans from the config file on the dashboard: the filter's scan boxes come from
// GET /scans (with each definition on hover), and ticking a custom scan narrows the
// table to its rows, each showing the indicators that made it fire.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';

import {
  LIVE_ROWS,
  OUT_DIR,
  TEST_TIMEOUT_MS,
  assertNoErrors,
  assertTableMatchesServer,
  openDashboard,
  startServer,
  useBrowser,
  waitInPage,
  waitLive,
  waitRows,
} from './helpers.mjs';

const browser = useBrowser();

const opts = { timeout: TEST_TIMEOUT_MS };

const CONFIG = `
[[scans]]
name  = "up_on_volume"
when  = ["change_pct > 0", "volume > 0"]
score = "change_pct"
`;

describe('custom scans', () => {
  test('the scan boxes list the config file\'s scans, and one narrows the table to its rows', opts, async (t) => {
    const dir = path.join(OUT_DIR, 'config');
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'custom-scans.toml');
    fs.writeFileSync(file, CONFIG);
    const server = await startServer(t, { name: 'custom-scans', args: ['--config', file] });
    const opened = await openDashboard(t, browser(), `${server.url}/`);
    const { page } = opened;
    await waitLive(page);

    const box = '#filters [name="scans"][value="up_on_volume"]';
    await page.waitForSelector(box, { timeout: 15_000 });
    const boxes = await page.$$eval('#filters [name="scans"]', (inputs) =>
      inputs.map((i) => ({ value: i.value, title: i.closest('label').title, custom: i.closest('label').classList.contains('custom') })));
    assert.equal(boxes.length, 9, 'the eight built-in scans and the custom one');
    assert.equal(boxes[0].value, 'price_change');
    assert.equal(boxes[0].custom, false);
    const custom = boxes[8];
    assert.equal(custom.value, 'up_on_volume');
    assert.equal(custom.custom, true);
    assert.equal(custom.title, 'change_pct > 0 and volume > 0\nscore change_pct');

    await waitRows(page, 5);
    await page.check(box);
    await page.click('#filters button[type="submit"]');
    await waitInPage(page, 'every live row to be an up_on_volume row', (sel) => {
      const trs = [...document.querySelectorAll(sel)];
      return trs.length > 0 && trs.every((tr) => tr.dataset.scan === 'up_on_volume');
    }, LIVE_ROWS);
    const titles = await page.$$eval(LIVE_ROWS, (trs) => trs.map((tr) => tr.title));
    for (const title of titles) {
      assert.match(title, /^change_pct -?\d+(\.\d+)?\nvolume \d+$/, `a row says why it fired: ${JSON.stringify(title)}`);
    }
    await assertTableMatchesServer(assert, page, server, { scans: ['up_on_volume'] });
    assertNoErrors(assert, opened);
  });
});
