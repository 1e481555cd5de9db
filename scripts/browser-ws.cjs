// What a real browser shows for a WebSocket URL: opens each URL from a page
// in headless Chromium and records the console text, the error event and
// the close code. Used to fill the browser column of docs/DOCTOR.md:
//   node scripts/browser-ws.cjs cases.json  (cases: [{name, page, url, ignoreHttpsErrors?}])
// Needs Debian's chromium and playwright-core (NODE_PATH to its node_modules).
const { chromium } = require('playwright-core');
const fs = require('fs');

(async () => {
  const cases = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic'],
  });
  const results = [];
  for (const c of cases) {
    const context = await browser.newContext({ ignoreHTTPSErrors: !!c.ignoreHttpsErrors });
    const page = await context.newPage();
    const console = [];
    page.on('console', (m) => console.push(m.text()));
    try {
      await page.goto(c.page, { timeout: 10000 });
      const outcome = await page.evaluate(({ url, protocols, hold }) => new Promise((resolve) => {
        const started = performance.now();
        const events = [];
        let ws;
        try {
          ws = protocols ? new WebSocket(url, protocols) : new WebSocket(url);
        } catch (e) {
          resolve({ thrown: `${e.name}: ${e.message}` });
          return;
        }
        const timer = setTimeout(() => resolve({ events, state: 'still ' + ['CONNECTING', 'OPEN'][ws.readyState] + ' after 8 s' }), 8000);
        ws.onopen = () => { events.push('open'); if (!hold) ws.close(1000); };
        ws.onerror = () => events.push('error');
        ws.onclose = (e) => {
          clearTimeout(timer);
          resolve({ events, code: e.code, wasClean: e.wasClean, ms: Math.round(performance.now() - started) });
        };
      }), { url: c.url, protocols: c.protocols, hold: !!c.hold });
      results.push({ name: c.name, ...outcome, console: console.filter((t) => t.includes('WebSocket') || t.includes('Mixed')) });
    } catch (e) {
      results.push({ name: c.name, failed: String(e) });
    }
    await context.close();
  }
  await browser.close();
  process.stdout.write(JSON.stringify(results, null, 1));
})();
