// The dashboard as a user sees it, in Debian's Chromium driven by playwright-core:
//   node dashboard.cjs URL TOKEN_FILE SCREENSHOT_DIR
// Prints one JSON object with what it found; exits non-zero (with the reason) when a check fails.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const [url, tokenFile, shots] = process.argv.slice(2);
const token = fs.readFileSync(tokenFile, 'utf8').split('\n')[0].trim();

function check(ok, what) {
  if (!ok) throw new Error(what);
}

(async () => {
  fs.mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--headless=new'] });
  const found = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 950 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${url}/ui`);
    // A wrong token is refused and kept nowhere.
    await page.fill('#token', 'not-the-token-0123456789');
    await page.click('#login-form button[type=submit]');
    await page.waitForFunction(() => document.getElementById('login-error').textContent.includes('refused'));
    check(await page.evaluate(() => sessionStorage.length === 0), 'a refused token was stored');
    await page.fill('#token', token);
    await page.click('#login-form button[type=submit]');
    await page.waitForSelector('#graph [data-node="site-d"]');
    await page.waitForFunction(() => document.querySelectorAll('#graph [data-link]').length >= 6);
    check(!page.url().includes(token), 'the token is in the URL');
    found.nodes = await page.$$eval('#graph [data-node]', (els) => els.map((e) => e.getAttribute('data-node')).sort());
    found.links = await page.$$eval('#graph [data-link]', (els) => els.map((e) => e.getAttribute('data-link')).sort());
    found.highlighted = await page.$$eval('#graph .path-highlight', (els) => els.map((e) => e.getAttribute('data-path')));
    await page.screenshot({ path: path.join(shots, 'topology.png'), fullPage: true });

    await page.click('#tabs button[data-view="decisions"]');
    found.winners = await page.$$eval('#decision-list tr.winner td:nth-child(2)', (els) => els.map((e) => e.textContent));
    await page.screenshot({ path: path.join(shots, 'decisions.png'), fullPage: true });
    await page.click('#tabs button[data-view="catalog"]');
    await page.waitForSelector('#catalog-table [data-entry]');
    found.entries = await page.$$eval('#catalog-table [data-entry]', (els) => els.map((e) => e.getAttribute('data-entry')).sort());
    found.refused = await page.$$eval('#authorization-table span.refused', (els) => els.length);
    await page.screenshot({ path: path.join(shots, 'catalog.png'), fullPage: true });
    await page.click('#tabs button[data-view="bindings"]');
    await page.screenshot({ path: path.join(shots, 'bindings.png'), fullPage: true });

    // The demo degrades a link on the binding's path: the re-route shows in the live feed.
    // (The feed starts with the recent events, the demo's own earlier re-route among them:
    // wait for the one the degraded link causes.)
    const degraded = (els) => els.map((e) => e.textContent).find((t) => t.includes('link r2–r4 loses'));
    try {
      await page.waitForFunction(
        () => [...document.querySelectorAll('#feed li[data-type="rerouted"]')].some((e) => e.textContent.includes('link r2–r4 loses')),
        null,
        { timeout: 90000 },
      );
    } catch (e) {
      // Say what the feed did show, and what the API says of the bindings and links.
      const feed = await page.$$eval('#feed li', (els) => els.map((l) => l.textContent));
      const api = async (p) => {
        try {
          return await (await fetch(`${url}${p}`, { headers: { authorization: `Bearer ${token}` } })).text();
        } catch (err) {
          return `(no answer: ${err.cause ?? err})`;
        }
      };
      throw new Error(
        `${e.message}\nthe feed:\n${feed.join('\n')}\nbindings: ${await api('/v1/bindings')}\nlinks: ${await api('/v1/links')}`,
      );
    }
    found.rerouted = await page.$$eval('#feed li[data-type="rerouted"]', degraded);
    // The re-route of step 5 (before the page was open) is in the feed too.
    found.earlier = await page.$$eval('#feed li[data-type="rerouted"]', (els) => els.some((e) => e.textContent.includes('fell silent')));
    await page.click('#tabs button[data-view="topology"]');
    await page.screenshot({ path: path.join(shots, 'rerouted.png'), fullPage: true });
    found.page_errors = errors;
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(found) + '\n');
})().catch((e) => {
  process.stderr.write(`dashboard check failed: ${e.stack || e}\n`);
  process.exit(1);
});
