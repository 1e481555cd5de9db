// holdfast.js — the browser client for the holdfast protocol (docs/PROTOCOL.md).
// One ES module, no dependencies, no build step. Served by the server at /holdfast.js.
//
// What it does for you: picks ws:/wss: from the page (and refuses ws: from an
// HTTPS page, saying why), reconnects with exponential backoff and full jitter
// (never after a "do not reconnect" close code, honouring reconnect_after_ms),
// replaces a connection whose server pings stopped (watchdog), resubscribes
// every channel from its last position so missed messages arrive before live
// ones (and tells you when they could not; a resubscribe refused for a
// reason that may pass is sent again, one refused for good is reported),
// queues calls made while disconnected (bounded), and times commands out.
// When WebSocket is blocked it falls back to Server-Sent Events, then to
// long-polling: it races them (the next starts if the previous has not
// connected within raceDelay), remembers what worked for this URL, and keeps
// trying to get back to WebSocket in the background.
// After a failure, the next `connect` says what happened (`report`: how the
// last session or attempt ended, how long it lived, the failed attempts, the
// time to get back, why a fallback transport is used); `report: false` turns
// that off.

import { TRANSPORTS } from './holdfast-transports.js';
import { applyDelta } from './holdfast-fossil.js';

/** The close-code table; kept equal to crates/protocol/src/close.rs by a test. */
export const CLOSE_CODES = {
  1000: ['normal', false, 'The session ended normally.'],
  1001: ['going_away', true, 'The server is restarting or shutting down; reconnect after reconnect_after_ms.'],
  1002: ['protocol_error', false, 'The client broke the WebSocket framing rules (RFC 6455).'],
  1003: ['unsupported_data', false, 'A binary frame arrived on the JSON protocol; send text frames.'],
  1007: ['invalid_payload', false, 'A text frame was not valid UTF-8.'],
  1008: ['policy_violation', false, 'The connection broke a server policy.'],
  1009: ['message_too_big', false, "A message exceeded the server's max_message_size."],
  1011: ['internal_error', true, 'The server hit an unexpected error.'],
  1013: ['try_again_later', true, 'The server is at capacity; reconnect after reconnect_after_ms.'],
  4000: ['slow_consumer', true, 'The client read too slowly and its outbound queue overflowed; reconnect and recover.'],
  4001: ['heartbeat_timeout', true, 'The client did not answer ping in time.'],
  4002: ['insufficient_state', true, "The server lost the client's position; reconnect and resubscribe with since."],
  4003: ['too_many_requests', true, 'The client flooded the server with commands; reconnect after reconnect_after_ms and slow down.'],
  4004: ['token_expired', true, 'The connect token expired without a refresh; reconnect with a new token.'],
  4005: ['message_timeout', true, "A message was not complete within the server's time limit; reconnect (smaller messages help on slow links)."],
  4500: ['disconnected_by_server', false, "The application's backend disconnected this user."],
};

/** What a close code means and whether to reconnect after it. */
export function closeCodeInfo(code) {
  const known = CLOSE_CODES[code];
  if (known) return { code, name: known[0], reconnect: known[1], meaning: known[2] };
  // Unknown codes follow their range: 4000-4499 reconnect, 4500-4999 do not.
  const reconnect = code === 1006 || code === 1012 || (code >= 4000 && code <= 4499);
  const meaning = code === 1006 ? 'The connection dropped without a close frame.' : 'A code this client does not know.';
  return { code, name: code === 1006 ? 'abnormal_closure' : 'unknown', reconnect, meaning };
}

/**
 * Exponential backoff with full jitter: the n-th delay is uniform in
 * [0, min(max, min * factor^n)). Pure: the random source is injectable.
 */
export class Backoff {
  constructor({ min = 500, max = 20000, factor = 2, random = Math.random } = {}) {
    Object.assign(this, { min, max, factor, random, attempt: 0 });
  }
  next() {
    const ceiling = Math.min(this.max, this.min * this.factor ** this.attempt);
    this.attempt += 1;
    return Math.floor(this.random() * ceiling);
  }
  reset() { this.attempt = 0; }
}

/**
 * Where a subscription stands: the last (epoch, offset) delivered. Decides
 * which messages are new (drops duplicates) and what `since` to send.
 */
export class Position {
  constructor() { this.epoch = null; this.offset = 0; }
  /** A `subscribed` reply: returns 'recovered' | 'lost' | 'fresh'. */
  subscribed(reply) {
    const before = this.epoch;
    if (reply.recovered === true) return 'recovered';
    this.epoch = reply.epoch;
    this.offset = reply.offset;
    return before === null ? 'fresh' : 'lost';
  }
  /** A `message`: true when it is new and in order. */
  accept(message) {
    if (message.offset <= this.offset) return false;
    this.offset = message.offset;
    return true;
  }
  since() { return this.epoch === null ? undefined : { epoch: this.epoch, offset: this.offset }; }
}

const UTF8 = new TextEncoder();
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

/** A JWT's `exp` (seconds), unverified; undefined for anything else. */
export function jwtExp(token) {
  try {
    const payload = String(token).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(payload + '='.repeat((4 - payload.length % 4) % 4))).exp;
    return Number.isFinite(exp) ? exp : undefined;
  } catch { return undefined; }
}

/** Derives the WebSocket URL from the page, or checks the one given. */
export function resolveUrl(url, page = globalThis.location) {
  if (!url) {
    if (!page) throw new Error('holdfast: no URL given and no page to derive it from');
    url = `${page.protocol === 'https:' ? 'wss' : 'ws'}://${page.host}/ws`;
  }
  if (page && page.protocol === 'https:' && url.startsWith('ws:')) {
    throw new Error(`holdfast: ${url} is ws:// but this page is HTTPS; browsers block insecure WebSockets ` +
      `from secure pages (Mixed Content) and report only a generic error. Use wss:// (or omit the URL).`);
  }
  return url;
}

/** A close reason is at most 123 bytes on a WebSocket; a report keeps every reason to that. */
const MAX_REASON = 123;
/** The longest report a server reads, as JSON text (bytes). */
const MAX_REPORT = 1024;
/** The transports' names on the wire (`connect.report.transport`). */
const WIRE = { websocket: 'websocket', sse: 'sse', polling: 'poll' };

/** `text` cut to at most `max` UTF-8 bytes, between two characters. */
function cutUtf8(text, max = MAX_REASON) {
  const s = String(text ?? '');
  let bytes = 0;
  let end = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0);
    const n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (bytes + n > max) break;
    bytes += n;
    end += ch.length;
  }
  return s.slice(0, end);
}

/**
 * The `connect.report` (docs/PROTOCOL.md) for `outage` (what ended and what
 * failed since) and `fallback` (why this connect is not on WebSocket): a
 * plain object of at most MAX_REPORT bytes as JSON. Either may be missing;
 * with neither there is nothing to report.
 */
function buildReport(outage, fallback, now) {
  if (!outage && !fallback) return undefined;
  // A fallback chosen without a failure (WebSocket still hanging, or
  // remembered from before) says only that WebSocket never opened.
  const r = outage
    ? { transport: WIRE[outage.transport], phase: outage.phase }
    : { transport: 'websocket', phase: 'socket' };
  if (outage) {
    if (outage.code !== undefined) r.code = outage.code;
    if (outage.reason) r.reason = cutUtf8(outage.reason);
    if (outage.lived !== undefined) r.lived_ms = Math.max(0, Math.round(outage.lived));
    r.attempts = outage.attempts;
    r.down_ms = Math.max(0, Math.round(now - outage.since));
  }
  if (fallback) r.fallback = fallback;
  if (outage?.recovered !== undefined) r.recovered = outage.recovered;
  // Escapes can make a reason six times longer as JSON.
  if (new TextEncoder().encode(JSON.stringify(r)).length > MAX_REPORT) delete r.reason;
  return r;
}


/**
 * Refusals a resubscribe may outlive: the server, or what it depends on, was
 * busy or away, not the request wrong (the same list as crates/client).
 */
const PASSING = new Set(['broker_unavailable', 'backend_unavailable', 'rate_limited', 'too_many_channels']);
/** Such a resubscribe is sent again after this delay, doubled (up to the most) while refusals go on. */
const RESUBSCRIBE_FIRST = 100;
const RESUBSCRIBE_MOST = 5000;

export class HoldfastClient extends EventTarget {
  /**
   * @param {string} [url] ws(s)://host/ws; derived from the page when omitted.
   * @param {object} [options] token, client, backoff ({min,max,factor}), pingGrace (ms),
   *   commandTimeout (ms), queueLimit, transports (['websocket','sse','polling']),
   *   raceDelay (ms), upgradeInterval (ms), rememberFor (ms), credentials (send cookies
   *   on SSE and long-polling to another origin), report (default true; false: send no
   *   `report` of what failed with the connect after a failure),
   *   getToken (async () => a fresh connect token: called before connecting when there is
   *   none or it expired, and before the token's exp to `refresh` the session),
   *   WebSocket (an implementation where the runtime has none: Node before 22 needs
   *   `(await import('ws')).WebSocket`) / EventSource / fetch / storage (also for tests).
   */
  constructor(url, options = {}) {
    super();
    this.url = resolveUrl(url, options.page ?? globalThis.location);
    this.options = {
      pingGrace: 5000, commandTimeout: 10000, queueLimit: 100, healthyAfter: 10000,
      transports: ['websocket', 'sse', 'polling'], raceDelay: 2000, upgradeInterval: 30000, rememberFor: 600000,
      report: true,
      ...options,
    };
    this.now = options.now ?? Date.now;
    this.requestedPing = undefined;
    this.backoff = new Backoff(options.backoff);
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.EventSource = options.EventSource ?? globalThis.EventSource;
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this.storage = options.storage ?? globalThis.localStorage;
    if (!this.WebSocket && this.options.transports.includes('websocket')) {
      // Falling back to long-polling without a word would look like a slow server.
      console.warn('holdfast: this runtime has no WebSocket; pass one (Node before 22: ' +
        "new HoldfastClient(url, { WebSocket: (await import('ws')).WebSocket })). Using SSE or long-polling meanwhile.");
    }
    this.token = options.token;
    this.tokenStale = false;
    this.state = 'closed';
    this.subs = new Map(); // channel -> { position, handler }
    this.pending = new Map(); // id -> { resolve, reject, timer }
    this.resubscribeLater = new Map(); // channel -> sub, refused for a reason that may pass
    this.resubscribeDelay = RESUBSCRIBE_FIRST;
    this.queue = []; // commands waiting for a connection
    this.nextId = 1;
    // What the next connect reports: the session (or first attempt) that
    // ended and what failed since; cleared once a session connects.
    this.outage = null;
    this.session = null; // the connected session: its transport, start, recovery
    this.closedByUser = false;
    // The browser knows before we do: reconnect at once when it comes back
    // online, and stop trying while it is offline.
    this.offline = false;
    this.onOnline = () => {
      this.offline = false;
      if (this.state === 'reconnecting') this.#reconnectNow();
    };
    this.onOffline = () => {
      this.offline = true;
      if (!this.transport || this.closedByUser) return;
      this.#dropTransport();
      this.#closed(1006, 'the browser went offline');
    };
    globalThis.addEventListener?.('online', this.onOnline);
    globalThis.addEventListener?.('offline', this.onOffline);
  }

  /** Opens the connection (and keeps it open until close()). */
  connect() {
    this.closedByUser = false;
    if (this.state === 'open' || this.state === 'connecting') return this;
    this.#open();
    return this;
  }

  /** Closes for good: no reconnect. Safe while still connecting. */
  close() {
    this.closedByUser = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.refreshTimer);
    clearTimeout(this.watchdog);
    clearInterval(this.upgradeTimer);
    globalThis.removeEventListener?.('online', this.onOnline);
    globalThis.removeEventListener?.('offline', this.onOffline);
    this.#dropTransport();
    for (const t of this.attempts ?? []) { clearTimeout(t.raceTimer); t.close(1000); }
    this.attempts?.clear();
    this.probe?.close();
    // Closing is no failure: a later connect() has nothing to report.
    this.outage = this.session = null;
    this.#fail(new Error('holdfast: client closed'));
    this.#setState('closing');
    this.#setState('closed', { code: 1000, reconnect: false });
  }

  /**
   * Subscribes; `onMessage(data, message)` gets each publication once, in
   * order. With `{latest: true}` it first gets the channel's newest one
   * (`message.latest` is true), when the channel has one and no recovery
   * brings what was missed: state and the updates after it, without a race.
   * With `{delta: 'fossil'}`, where the channel's namespace offers it, the
   * server sends each message as the changes from the one before and this
   * client rebuilds it: `onMessage` sees whole data either way.
   */
  subscribe(channel, onMessage, { latest = false, delta } = {}) {
    const sub = { position: new Position(), handler: onMessage, latest, delta, base: null, resyncing: false };
    this.subs.set(channel, sub);
    const done = this.state === 'open' ? this.#subscribe(channel, sub) : Promise.resolve();
    return { ready: done, unsubscribe: () => this.unsubscribe(channel) };
  }

  unsubscribe(channel) {
    this.subs.delete(channel);
    this.session?.recovering.delete(channel);
    return this.state === 'open' ? this.#command({ op: 'unsubscribe', channel }) : Promise.resolve();
  }

  /**
   * Publishes; resolves with {channel, epoch, offset, skipped?}. Queued while
   * disconnected. Options: `idempotency_key` (a retry publishes nothing and
   * answers the first's offset), `version` and `version_epoch` (skipped
   * unless newer than the channel's).
   */
  publish(channel, data, { idempotency_key, version, version_epoch } = {}) {
    const options = Object.entries({ idempotency_key, version, version_epoch }).filter(([, v]) => v !== undefined);
    return this.#command({ op: 'publish', channel, data, ...Object.fromEntries(options) }, { queue: true });
  }

  #setState(state, detail = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, ...detail } }));
  }

  #emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  /** The transports to try, the one that worked last for this URL first. */
  #order() {
    const usable = this.options.transports.filter((t) =>
      t === 'websocket' ? this.WebSocket : t === 'sse' ? this.EventSource && this.fetch : this.fetch);
    const remembered = this.#remembered()?.transport;
    return remembered && usable.includes(remembered)
      ? [remembered, ...usable.filter((t) => t !== remembered)] : usable;
  }

  #remembered() {
    try {
      const r = JSON.parse(this.storage?.getItem(`holdfast:transport:${this.url}`) ?? 'null');
      return r && r.until > this.now() ? r : undefined;
    } catch { return undefined; }
  }

  /** The transport that worked, and on a fallback why WebSocket did not (sent again while it is tried first). */
  #remember(transport, fallback) {
    try {
      const key = `holdfast:transport:${this.url}`;
      if (transport === 'websocket') this.storage?.removeItem(key);
      else this.storage?.setItem(key, JSON.stringify({ transport, until: this.now() + this.options.rememberFor, fallback }));
    } catch { /* storage may be disabled */ }
  }

  /** A `connect`; with `fallback` (why this one is not on WebSocket) or after a failure it carries a report. */
  #connectCommand(fallback) {
    const connect = { op: 'connect', client: 'holdfast.js/0.1' };
    if (this.token) connect.token = this.token;
    if (this.requestedPing) connect.ping_interval_ms = this.requestedPing;
    const report = this.options.report ? buildReport(this.outage, fallback, this.now()) : undefined;
    if (report) connect.report = report;
    return connect;
  }

  /**
   * Why a connect of this race goes over `name` rather than WebSocket, in
   * the doctor's cause ids. A browser does not say why a WebSocket failed
   * (a 400, a 403, a proxy that strips the upgrade and a filter all read
   * as "closed before open", 1006), so: failed before opening while plain
   * HTTP is tried from the same page → websocket_blocked (the report only
   * arrives if that HTTP works); still not open after raceDelay →
   * handshake_timeout; opened but closed before `connected`, or missing
   * from this runtime → unknown; not tried yet because a fallback is
   * remembered → the reason remembered with it.
   */
  #fallbackReason(name, websocket) {
    if (name === 'websocket' || !this.options.transports.includes('websocket')) return undefined;
    if (!this.WebSocket) return 'unknown';
    if (websocket.failed) return websocket.failed;
    if (websocket.started) return 'handshake_timeout';
    return this.#remembered()?.fallback ?? 'unknown';
  }

  /** A transport attempt ended without a session: one more failed attempt (the first starts the outage). */
  #attemptFailed(t, code, reason, refusal) {
    if (this.outage) { this.outage.attempts += 1; return; }
    this.outage = {
      transport: t.name, phase: t.opened ? 'session' : 'socket', since: this.now(), attempts: 1,
      // A refused connect carries no close code: its error code is the reason.
      ...(refusal ? { reason: cutUtf8(refusal.code) } : { code, reason: cutUtf8(reason) }),
    };
  }

  /**
   * Starts the first transport; each one that has not connected within
   * raceDelay (or failed) starts the next, in parallel. The first to connect
   * wins and the others are closed: a blocked WebSocket costs seconds.
   */
  #open() {
    this.#setState('connecting');
    if (this.options.getToken && (!this.token || this.tokenStale)) {
      // A fresh token first: connecting with one the server refuses as
      // expired would only come back here.
      this.options.getToken().then((token) => {
        this.token = token;
        this.tokenStale = false;
        if (!this.closedByUser && this.state === 'connecting') this.#start();
      }, (error) => {
        this.#emit('error', Object.assign(new Error(`holdfast: getToken failed: ${error?.message ?? error}`), { code: 'token_unavailable' }));
        if (!this.closedByUser && this.state === 'connecting') this.#closed(1006, 'no token');
      });
      return;
    }
    this.#start();
  }

  #start() {
    this.openedAt = this.now();
    this.lastHeard = this.openedAt;
    const order = this.#order();
    const attempts = new Set();
    this.attempts = attempts;
    // This race's WebSocket: whether it started, and once it failed, what
    // that says about why the next transport is used.
    const websocket = { started: false, failed: undefined };
    let next = 0;
    let lastFailure = [1006, 'no transport available'];
    const startNext = () => {
      if (this.closedByUser || this.transport || next >= order.length) {
        if (!this.transport && attempts.size === 0 && !this.closedByUser) this.#closed(...lastFailure);
        return;
      }
      const name = order[next++];
      let t;
      const hooks = {
        onConnected: (reply) => {
          if (this.closedByUser || this.transport) return t.close();
          for (const other of attempts) if (other !== t) { clearTimeout(other.raceTimer); other.close(); }
          attempts.clear();
          clearTimeout(t.raceTimer);
          this.transport = t;
          this.#connected(t, reply);
        },
        onFrame: (m) => { if (this.transport === t) this.#frame(m); },
        onUnreadable: (u) => {
          // Still traffic: the server is alive, only this line was garbled.
          if (this.transport === t) this.#heard();
          this.#emit('unreadable', u);
        },
        onClose: (code, reason, error) => {
          clearTimeout(t.raceTimer);
          if (t.disconnect && !this.transport) this.lastDisconnect = t.disconnect;
          if (this.transport === t) { this.transport = null; return this.#closed(code, reason); }
          if (!attempts.delete(t)) return;
          if (name === 'websocket') websocket.failed = t.opened ? 'unknown' : 'websocket_blocked';
          this.#attemptFailed(t, code, reason, error);
          if (error) {
            // The server answered and refused (a bad token, say): another
            // transport would hear the same.
            this.#emit('error', Object.assign(new Error(error.message), { code: error.code }));
            for (const other of attempts) { clearTimeout(other.raceTimer); other.close(); }
            attempts.clear();
            next = order.length;
            // An expired token is worth a new one, when there is a way to get it.
            if (error.code === 'token_expired' && this.options.getToken) {
              this.tokenStale = true;
              return this.#closed(4004, reason);
            }
            return this.#closed(code, reason);
          }
          lastFailure = [code, reason];
          // A transport that failed outright does not make the next one wait.
          startNext();
        },
      };
      const fallback = this.#fallbackReason(name, websocket);
      if (name === 'websocket') websocket.started = true;
      t = new TRANSPORTS[name](this, this.#connectCommand(fallback), hooks);
      t.fallback = fallback;
      attempts.add(t);
      t.raceTimer = setTimeout(startNext, this.options.raceDelay);
    };
    startNext();
  }

  #connected(t, reply) {
    this.#scheduleRefresh();
    this.pingInterval = reply.ping_interval_ms;
    this.lastHeard = this.now();
    this.#armWatchdog();
    this.#remember(t.name, t.fallback);
    // Reported (its connect carried it): a new session starts, and with it
    // the record of whether it got back every channel that had a position.
    this.outage = null;
    const recovering = new Set([...this.subs].filter(([, sub]) => sub.position.since()).map(([channel]) => channel));
    this.session = { transport: t.name, openedAt: this.now(), recovering, withPosition: recovering.size > 0, lost: false };
    this.#setState('open', { session: reply.session, transport: t.name, pingIntervalMs: reply.ping_interval_ms });
    for (const [channel, sub] of this.subs) this.#resubscribe(channel, sub);
    for (const q of this.queue.splice(0)) this.#send(q.cmd, q);
    clearInterval(this.upgradeTimer);
    if (t.name !== 'websocket' && this.options.transports.includes('websocket') && this.WebSocket) {
      this.upgradeTimer = setInterval(() => this.#tryUpgrade(), this.options.upgradeInterval);
    }
  }

  /**
   * On a fallback transport: tries WebSocket again; when it connects, the
   * client moves to it (resubscribing from its positions, so nothing is
   * lost or repeated).
   */
  #tryUpgrade() {
    if (this.probe || this.state !== 'open' || this.transport?.name === 'websocket') return;
    const done = () => { clearTimeout(this.probe?.raceTimer); this.probe = null; };
    this.probe = new TRANSPORTS.websocket(this, this.#connectCommand(), {
      onConnected: () => {
        const probe = this.probe;
        done();
        probe.close();
        if (this.closedByUser || this.state !== 'open') return;
        this.#remember('websocket');
        this.#emit('upgrade', { from: this.transport.name, to: 'websocket' });
        clearInterval(this.upgradeTimer);
        this.session = null; // left on purpose: nothing to report
        this.#dropTransport();
        this.#fail(new Error('holdfast: moving to WebSocket'));
        this.#open();
      },
      onFrame: () => {},
      onUnreadable: (u) => this.#emit('unreadable', u),
      onClose: done,
    });
    this.probe.raceTimer = setTimeout(() => { this.probe?.close(); done(); }, this.options.raceDelay * 2);
  }

  #dropTransport() {
    const t = this.transport;
    this.transport = null;
    t?.close(1000);
  }

  #frame(m) {
    this.#heard();
    this.#handle(m);
  }

  #heard() {
    this.lastHeard = this.now();
    this.#armWatchdog();
  }

  #handle(m) {
    if (m.op === 'ping') return this.transport?.send('{"op":"pong"}');
    if (m.op === 'message') {
      const sub = this.subs.get(m.channel);
      if (!sub || sub.resyncing) return;
      if (m.delta !== undefined) return this.#deltaMessage(m, sub);
      sub.base = null; // plain (recovered) data: its exact text is not known here
      if (sub.position.accept(m)) sub.handler?.(m.data, m);
      return;
    }
    if (m.op === 'join' || m.op === 'leave') {
      // Who came and went on a channel held here (namespaces with join_leave);
      // one that crossed our own unsubscribe is of no interest.
      if (this.subs.has(m.channel)) {
        const { channel, session, user = null, client = null, info } = m;
        this.#emit(m.op, { channel, session, user, client, ...(info === undefined ? {} : { info }) });
      }
      return;
    }
    if (m.op === 'disconnect') { this.lastDisconnect = m; return; }
    if (m.op === 'subscribed') {
      // Synchronously: the recovered messages follow in the same frame and
      // must meet the updated position.
      const sub = this.subs.get(m.channel);
      if (sub) Object.assign(sub, { base: null, resyncing: false });
      const missed = sub ? m.offset - sub.position.offset : 0;
      const outcome = sub?.position.subscribed(m);
      if (outcome === 'recovered') this.#emit('recovered', { channel: m.channel, missed });
      if (outcome === 'lost') this.#emit('recovery-failed', { channel: m.channel, epoch: m.epoch, offset: m.offset });
      if ((outcome === 'recovered' || outcome === 'lost') && this.session?.recovering.delete(m.channel)) {
        this.session.lost ||= outcome === 'lost';
      }
      // The newest publication rides in the reply: its offset is the reply's,
      // which the position now holds, so it is handed over here.
      if (sub && m.latest) {
        const { offset, data } = m.latest;
        sub.handler?.(data, { op: 'message', channel: m.channel, offset, data, latest: true });
      }
      // A subscribe worked: a later refusal starts from the shortest delay.
      this.resubscribeDelay = RESUBSCRIBE_FIRST;
    }
    const p = m.id !== undefined && this.pending.get(m.id);
    if (!p) { if (m.op === 'error') this.#emit('error', m); return; }
    this.pending.delete(m.id);
    clearTimeout(p.timer);
    if (m.op === 'error') p.reject(Object.assign(new Error(m.message), { code: m.code }));
    else p.resolve(m);
  }

  #subscribe(channel, sub) {
    const cmd = { op: 'subscribe', channel };
    const since = sub.position.since();
    if (since) cmd.since = since;
    if (sub.latest) cmd.latest = true;
    if (sub.delta) cmd.delta = sub.delta;
    return this.#command(cmd);
  }

  /**
   * A message of a delta subscription: `data` is the text, whole or as a
   * Fossil delta against the previous message's. A delta that does not
   * apply never becomes data: the subscription is dropped and taken again
   * from the last good position, so recovery brings what it missed.
   */
  #deltaMessage(m, sub) {
    if (m.offset <= sub.position.offset) return; // a duplicate: the base stays
    let text, data;
    try {
      if (m.delta && !(sub.base && m.offset === sub.position.offset + 1)) throw new Error('a delta without its base');
      text = m.delta ? applyDelta(sub.base, UTF8.encode(m.data)) : UTF8.encode(m.data);
      data = JSON.parse(STRICT_UTF8.decode(text));
    } catch (e) {
      sub.resyncing = true;
      this.#emit('error', { code: 'delta_failed', channel: m.channel, offset: m.offset, message: e.message });
      this.#command({ op: 'unsubscribe', channel: m.channel }).catch(() => {});
      return this.#resubscribe(m.channel, sub);
    }
    sub.base = text;
    sub.position.accept(m);
    sub.handler?.(data, { op: 'message', channel: m.channel, offset: m.offset, data });
  }

  /**
   * A resubscribe after a reconnect: nobody waits for its answer, so a
   * refusal must not pass unseen, or the client would believe it holds a
   * subscription the server does not. A refusal that may pass is sent again
   * later, from the same position; any other drops the channel and says so.
   */
  #resubscribe(channel, sub) {
    const t = this.transport;
    this.#subscribe(channel, sub).catch((e) => {
      if (!e.code) return this.#emit('error', e); // no answer: timed out, or the connection ended
      if (this.subs.get(channel) !== sub) return; // unsubscribed (or subscribed anew) meanwhile
      if (!PASSING.has(e.code)) {
        if (this.session?.recovering.delete(channel)) this.session.lost = true;
        this.subs.delete(channel);
        return this.#emit('subscribe-failed', { channel, code: e.code, message: e.message });
      }
      // This runs a microtask after the reply: if the connection ended
      // since, the next one resubscribes anyway.
      if (this.transport === t) this.#resubscribeAfterDelay(channel, sub);
    });
  }

  /** One timer sends every refused resubscribe again; #fail clears it with the connection. */
  #resubscribeAfterDelay(channel, sub) {
    this.resubscribeLater.set(channel, sub);
    if (this.resubscribeTimer) return;
    this.resubscribeTimer = setTimeout(() => {
      this.resubscribeTimer = null;
      const due = [...this.resubscribeLater];
      this.resubscribeLater.clear();
      for (const [ch, s] of due) if (this.subs.get(ch) === s) this.#resubscribe(ch, s);
    }, this.resubscribeDelay);
    this.resubscribeDelay = Math.min(this.resubscribeDelay * 2, RESUBSCRIBE_MOST);
  }

  #command(cmd, { queue = false, first = false } = {}) {
    return new Promise((resolve, reject) => {
      const entry = { cmd, resolve, reject };
      if (first || this.state === 'open') return this.#send(cmd, entry);
      if (!queue) return reject(new Error(`holdfast: not connected (${cmd.op})`));
      if (this.queue.length >= this.options.queueLimit) {
        return reject(new Error(`holdfast: ${this.queue.length} calls already wait for a connection`));
      }
      entry.timer = setTimeout(() => {
        this.queue = this.queue.filter((q) => q !== entry);
        reject(new Error(`holdfast: ${cmd.op} timed out waiting for a connection`));
      }, this.options.commandTimeout);
      this.queue.push(entry);
    });
  }

  #send(cmd, entry) {
    clearTimeout(entry.timer);
    const id = this.nextId++;
    entry.timer = setTimeout(() => {
      this.pending.delete(id);
      entry.reject(new Error(`holdfast: ${cmd.op} got no reply within ${this.options.commandTimeout} ms`));
    }, this.options.commandTimeout);
    this.pending.set(id, entry);
    this.transport.send(JSON.stringify({ ...cmd, id }));
  }

  /** No server ping within interval + grace: the connection is dead. */
  #armWatchdog() {
    clearTimeout(this.watchdog);
    if (!this.pingInterval) return;
    this.watchdog = setTimeout(() => {
      this.#emit('watchdog', { silentFor: this.pingInterval + this.options.pingGrace });
      const t = this.transport;
      this.transport = null;
      t?.close(4001);
      this.#closed(4001, 'no ping from the server');
    }, this.pingInterval + this.options.pingGrace);
  }

  /**
   * The connection ended (closed, dropped, or left for WebSocket): what it had
   * in flight ends with it. Refused resubscribes are not retried on it; the
   * next connection resubscribes every channel anyway.
   */
  #fail(error) {
    for (const p of this.pending.values()) { clearTimeout(p.timer); p.reject(error); }
    this.pending.clear();
    clearTimeout(this.resubscribeTimer);
    this.resubscribeTimer = null;
    this.resubscribeLater.clear();
    this.resubscribeDelay = RESUBSCRIBE_FIRST;
  }

  /**
   * With getToken: asks for a new token 30 s before this one's `exp` (read
   * from the JWT, unverified: only the timing depends on it) and sends
   * `refresh`, so the session is not closed with 4004. If that fails the
   * server closes it and the reconnect fetches a token anyway.
   */
  #scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const exp = jwtExp(this.token);
    if (!this.options.getToken || !exp) return;
    const wait = Math.max(5000, exp * 1000 - this.now() - 30000);
    this.refreshTimer = setTimeout(async () => {
      try {
        const token = await this.options.getToken();
        await this.#command({ op: 'refresh', token });
        this.token = token;
        this.#scheduleRefresh();
      } catch (error) {
        this.#emit('error', Object.assign(new Error(`holdfast: token refresh failed: ${error?.message ?? error}`), { code: 'refresh_failed' }));
      }
    }, wait);
  }

  #closed(code, reason) {
    clearTimeout(this.refreshTimer);
    if (code === 4004) this.tokenStale = true;
    clearTimeout(this.watchdog);
    clearInterval(this.upgradeTimer);
    this.transport = null;
    this.#fail(new Error(`holdfast: connection closed (${code})`));
    if (this.closedByUser) return;
    this.#sessionEnded(code, reason);
    const info = closeCodeInfo(code);
    const hint = this.lastDisconnect?.reconnect_after_ms;
    this.lastDisconnect = null;
    if (this.now() - this.openedAt > this.options.healthyAfter) this.backoff.reset();
    this.#shortenPingAfterIdleCut(code);
    if (!info.reconnect) return this.#setState('closed', { ...info, reason });
    if (this.offline) return this.#setState('reconnecting', { ...info, reason, waitingForOnline: true });
    const delay = Math.max(hint ?? 0, this.backoff.next());
    this.#setState('reconnecting', { ...info, reason, delay });
    this.retryTimer = setTimeout(() => this.#open(), delay);
  }

  /** The connected session ended (not on purpose): the next connect reports it. */
  #sessionEnded(code, reason) {
    const s = this.session;
    if (!s) return;
    this.session = null;
    const now = this.now();
    // Whether every channel with a position came back: unknown while some
    // had no answer, absent when none had a position.
    const recovered = !s.withPosition ? undefined : s.lost ? false : s.recovering.size === 0 ? true : undefined;
    this.outage = {
      transport: s.transport, phase: 'open', code, reason: cutUtf8(reason), lived: now - s.openedAt, since: now,
      attempts: 0, recovered,
    };
  }

  /**
   * A connection that died without a close frame (1006) after a silence
   * shorter than the server's ping interval was most likely cut by an idle
   * timeout in between (a proxy, a load balancer). Ask for pings at half
   * that silence from now on (the server honours 5 s and up).
   */
  #shortenPingAfterIdleCut(code) {
    const silence = this.now() - this.lastHeard;
    if (code !== 1006 || !this.pingInterval || silence < 5000 || silence >= this.pingInterval) return;
    const wanted = Math.max(5000, Math.floor(silence / 2));
    if (this.requestedPing && this.requestedPing <= wanted) return;
    this.#emit('ping-shortened', { from: this.requestedPing ?? this.pingInterval, to: wanted, silence });
    this.requestedPing = wanted;
  }

  #reconnectNow() {
    clearTimeout(this.retryTimer);
    this.#open();
  }
}
