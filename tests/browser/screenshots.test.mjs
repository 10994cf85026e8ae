// Screenshots of the dashboard at desktop and phone sizes, saved to target/browser/.
// At phone width the page must not scroll sideways: wide tables scroll in their own box.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';

import {
  OUT_DIR,
  TEST_TIMEOUT_MS,
  assertNoErrors,
  openDashboard,
  sleep,
  startServer,
  waitInPage,
  waitLive,
  waitRows,
  useBrowser,
} from './helpers.mjs';

const browser = useBrowser();

const opts = { timeout: TEST_TIMEOUT_MS };

async function readyForPicture(page) {
  await waitLive(page);
  await waitRows(page, 5);
  await waitInPage(page, 'at least one alert in #alerts', () =>
    document.querySelectorAll('#alerts li[data-alert-id]').length > 0);
  // Let a flash fade and the sparkline draw a few points.
  await sleep(1_500);
}

function assertPicture(file) {
  assert.ok(fs.existsSync(file), `${file} was written`);
  const { size } = fs.statSync(file);
  assert.ok(size > 10 * 1024, `${file} is more than 10 KB (${size} bytes)`);
}

describe('dashboard screenshots', () => {
  test('desktop 1280x800', opts, async (t) => {
    const server = await startServer(t, { name: 'shot-desktop' });
    const opened = await openDashboard(t, browser(), `${server.url}/`, { viewport: { width: 1280, height: 800 } });
    const { page } = opened;
    await readyForPicture(page);
    fs.mkdirSync(OUT_DIR, { recursive: true });
    const file = path.join(OUT_DIR, 'dashboard.png');
    fs.rmSync(file, { force: true });
    await page.screenshot({ path: file });
    assertPicture(file);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(overflow <= 1280 + 1, `no sideways page scroll at 1280 px (scrollWidth ${overflow})`);
    assertNoErrors(assert, opened);
  });

  test('phone 390x844 without sideways page scrolling', opts, async (t) => {
    const server = await startServer(t, { name: 'shot-phone' });
    const opened = await openDashboard(t, browser(), `${server.url}/`, {
      viewport: { width: 390, height: 844 },
      deviceScaleFactor: 2,
      isMobile: true,
      hasTouch: true,
    });
    const { page } = opened;
    await readyForPicture(page);
    fs.mkdirSync(OUT_DIR, { recursive: true });
    const file = path.join(OUT_DIR, 'dashboard-phone.png');
    fs.rmSync(file, { force: true });
    await page.screenshot({ path: file });
    assertPicture(file);
    const widths = await page.evaluate(() => {
      const wide = [...document.body.querySelectorAll('*')]
        .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1)
        .filter((el) => !el.parentElement || el.parentElement.getBoundingClientRect().right <= window.innerWidth + 1)
        .slice(0, 5)
        .map((el) => `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.className && typeof el.className === 'string' ? `.${el.className.trim().split(/\s+/).join('.')}` : ''} right=${Math.round(el.getBoundingClientRect().right)}`);
      return { scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth, wide };
    });
    assert.ok(widths.scrollWidth <= 390 + 1,
      `no sideways page scroll at 390 px: scrollWidth ${widths.scrollWidth}, innerWidth ${widths.innerWidth}, sticking out: ${widths.wide.join('; ')}`);
    assertNoErrors(assert, opened);
  });
});
