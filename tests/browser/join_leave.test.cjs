// Join and leave through holdfast.js in real headless Chromium (issue 28):
// two pages subscribe to a channel of a namespace with `join_leave = true`
// (from a config file); the first hears the second's join, then its leave
// when the second page is closed.
// Run by scripts/test: `node --test tests/browser/` with HOLDFAST_BIN set and
// NODE_PATH pointing at playwright-core.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { startServer, stopped, launch } = require('./support.cjs');

/** In the page: a client subscribed to `channel`, recording join and leave in window.members; its session id. */
async function subscribeIn(page, channel) {
  return page.evaluate(async (channel) => {
    const { HoldfastClient } = await import('/holdfast.js');
    const client = new HoldfastClient();
    window.members = [];
    for (const type of ['join', 'leave']) client.addEventListener(type, (e) => window.members.push({ type, ...e.detail }));
    const open = new Promise((resolve) => client.addEventListener('state', (e) => {
      if (e.detail.state === 'open') resolve(e.detail.session);
    }));
    client.connect();
    const session = await open;
    await client.subscribe(channel, () => {}).ready;
    window.joinClient = client;
    return session;
  }, channel);
}

test('a page hears another page join and leave a join_leave channel', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-browser-join-'));
  const config = path.join(dir, 'holdfast.toml');
  fs.writeFileSync(config, '[namespaces.room]\njoin_leave = true\n');
  const { proc, base } = await startServer(0, ['--config', config]);
  const browser = await launch();
  try {
    const first = await browser.newPage();
    await first.goto(`${base}/`);
    const firstSession = await subscribeIn(first, 'room:browser');
    const second = await browser.newPage();
    await second.goto(`${base}/`);
    const secondSession = await subscribeIn(second, 'room:browser');
    assert.notEqual(firstSession, secondSession);

    await first.waitForFunction(() => window.members.length >= 1, null, { timeout: 10000 });
    const [join] = await first.evaluate(() => window.members);
    assert.deepEqual(join, { type: 'join', channel: 'room:browser', session: secondSession, user: null, client: join.client });
    assert.match(join.client ?? '', /holdfast\.js/, 'the client name holdfast.js sends in connect');
    assert.deepEqual(await second.evaluate(() => window.members), [], 'a page does not hear its own join');

    await second.close();
    await first.waitForFunction(() => window.members.length >= 2, null, { timeout: 10000 });
    const members = await first.evaluate(() => window.members);
    assert.deepEqual(members.map((m) => [m.type, m.session]), [['join', secondSession], ['leave', secondSession]]);
    await first.evaluate(() => window.joinClient.close());
  } finally {
    await browser.close();
    await stopped(proc);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
