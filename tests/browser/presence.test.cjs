// Presence against a real multi-tab session in headless Chromium: two tabs
// signed in as one user and a tab of another, all subscribed through
// holdfast.js. `/api/presence?by=user` and `/api/presence/stats` must count
// the tabs as sessions and the people as users, and follow a tab closing.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startServer, stopped, api, launch } = require('./support.cjs');

const JWT_SECRET = 'presence-secret';
const CHANNEL = 'team:room';

/** An HS256 connect token for `sub`, valid for an hour (what an app's login would hand the page). */
function token(sub) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${crypto.createHmac('sha256', JWT_SECRET).update(body).digest('base64url')}`;
}

/** A tab on the server's origin (not the demo page, whose own session would count) subscribed to CHANNEL as `user`. */
async function tab(context, base, user) {
  const page = await context.newPage();
  await page.goto(`${base}/healthz`);
  await page.evaluate(async ({ channel, token }) => {
    const { HoldfastClient } = await import('/holdfast.js');
    const client = new HoldfastClient(undefined, { token });
    client.connect();
    await new Promise((resolve) => {
      const check = () => (client.state === 'open' ? resolve() : setTimeout(check, 20));
      check();
    });
    await client.subscribe(channel, () => {}).ready;
    window.client = client;
  }, { channel: CHANNEL, token: token(user) });
  return page;
}

/** Polls `/api/presence/stats` until it shows `sessions` (10 s at most); the last answer. */
async function statsOnce(base, sessions) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const stats = await api(base, `/api/presence/stats?channel=${CHANNEL}`);
    if (stats.sessions === sessions || Date.now() > deadline) return stats;
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('two tabs of one user and one of another: 3 sessions, 2 users; a tab closes: 2 and 2', async () => {
  const { proc, base } = await startServer(0, ['--jwt-secret', JWT_SECRET]);
  const browser = await launch();
  try {
    // One browser context: the tabs share a profile, as a user's tabs do.
    const context = await browser.newContext();
    const [annFirst, annSecond] = [await tab(context, base, 'ann'), await tab(context, base, 'ann')];
    await tab(await browser.newContext(), base, 'bob');

    assert.deepEqual(await statsOnce(base, 3), { channel: CHANNEL, sessions: 3, users: 2, anonymous_sessions: 0 });
    const byUser = await api(base, `/api/presence?channel=${CHANNEL}&by=user`);
    const counts = Object.fromEntries(byUser.users.map((u) => [u.user, u.sessions.length]));
    assert.deepEqual(counts, { ann: 2, bob: 1 }, JSON.stringify(byUser));
    assert.equal(byUser.anonymous_sessions, 0);
    const annSessions = byUser.users.find((u) => u.user === 'ann').sessions;
    assert.equal(new Set(annSessions.map((s) => s.session ?? s)).size, 2, 'two distinct sessions for ann');

    await annSecond.close();
    assert.deepEqual(await statsOnce(base, 2), { channel: CHANNEL, sessions: 2, users: 2, anonymous_sessions: 0 });
    const after = await api(base, `/api/presence?channel=${CHANNEL}&by=user`);
    const left = Object.fromEntries(after.users.map((u) => [u.user, u.sessions.length]));
    assert.deepEqual(left, { ann: 1, bob: 1 }, 'ann is still there through her other tab');
    assert.equal(await annFirst.evaluate(() => window.client.state), 'open');
  } finally {
    await browser.close();
    await stopped(proc);
  }
});
