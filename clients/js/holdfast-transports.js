// The transports of holdfast.js: how protocol objects travel over a
// WebSocket, Server-Sent Events (down) with POSTs (up), or long-polling,
// and how a line that is no protocol object is reported. holdfast.js picks
// and races them; each reports to it through hooks. A module of its own so
// holdfast.js stays about the connection's life; served next to it
// (/holdfast-transports.js) and shipped in the same package.

/** The HTTP base URL of a ws(s)://host/path endpoint: http(s)://host. */
function httpBase(wsUrl) {
  const u = new URL(wsUrl);
  return `${u.protocol === 'wss:' ? 'https:' : 'http:'}//${u.host}`;
}

function connectQuery(connect) {
  const q = new URLSearchParams();
  for (const k of ['client', 'token', 'ping_interval_ms']) if (connect[k] !== undefined) q.set(k, connect[k]);
  if (connect.report) q.set('report', JSON.stringify(connect.report));
  return q.toString();
}

/** The longest excerpt of an unreadable line kept, in characters. */
const EXCERPT = 200;

/**
 * What the server sent that is no protocol object (a pretty-printed object
 * torn across lines, say): enough of it to recognise, and why.
 */
function unreadable(text, error) {
  let line = String(text);
  if (line.length > EXCERPT) {
    // Cut, but not between the two halves of a surrogate pair.
    const end = /[\uD800-\uDBFF]/.test(line[EXCERPT - 2]) ? EXCERPT - 2 : EXCERPT - 1;
    line = `${line.slice(0, end)}…`;
  }
  return { line, error };
}

const isObject = (m) => m !== null && typeof m === 'object' && !Array.isArray(m);

/** JSON.parse, or undefined once `text` went to `onUnreadable`: a bad line costs itself, not its batch. */
function parse(text, onUnreadable) {
  try { return JSON.parse(text); } catch (e) { onUnreadable(unreadable(text, e.message)); return undefined; }
}

/** One protocol object, or undefined once what came instead went to `onUnreadable`. */
function readObject(text, onUnreadable) {
  const m = parse(text, onUnreadable);
  if (m === undefined || isObject(m)) return m;
  onUnreadable(unreadable(text, 'not a JSON object'));
  return undefined;
}

/**
 * A transport carries protocol objects both ways and reports through hooks:
 * onConnected(reply) once the session is connected, onFrame(message) for
 * everything after, onUnreadable({line, error}) for what did not parse,
 * onClose(code, reason) once, when it ends.
 */
class WebSocketTransport {
  constructor(client, connect, hooks) {
    this.name = 'websocket';
    this.hooks = hooks;
    const ws = new client.WebSocket(client.url, 'holdfast.v1.json');
    this.ws = ws;
    ws.onopen = () => { this.opened = true; ws.send(JSON.stringify({ ...connect, id: 0 })); };
    ws.onmessage = (e) => {
      // One object per line, each read on its own.
      for (const line of String(e.data).split('\n')) {
        if (!line.trim()) continue;
        const m = readObject(line, hooks.onUnreadable);
        if (!m) continue;
        if (this.connected) hooks.onFrame(m);
        else if (m.op === 'connected') { this.connected = true; hooks.onConnected(m); }
        else if (m.op === 'error') { this.close(4000); hooks.onClose(4000, m.message, m); }
        else if (m.op === 'disconnect') this.disconnect = m;
      }
    };
    ws.onclose = (e) => { this.ws = null; hooks.onClose(e.code, e.reason); };
  }
  send(text) { this.ws?.send(text); }
  close(code = 1000) {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    // Closing a socket that is still CONNECTING makes browsers log "closed
    // before the connection is established"; let it open, then close it.
    if (ws.readyState === 0) ws.onopen = () => ws.close(1000);
    else if (ws.readyState === 1) ws.close(code);
  }
}

/** Server-Sent Events down, POST up: for networks that block WebSocket. */
class SseTransport {
  constructor(client, connect, hooks) {
    this.name = 'sse';
    this.client = client;
    this.hooks = hooks;
    const es = new client.EventSource(`${httpBase(client.url)}/sse?${connectQuery(connect)}`,
      { withCredentials: !!client.options.credentials });
    this.es = es;
    es.onopen = () => { this.opened = true; };
    es.onmessage = (e) => {
      this.opened = true;
      const m = readObject(e.data, hooks.onUnreadable);
      if (!m) return;
      if (this.session) {
        if (m.op === 'disconnect') this.disconnect = m;
        hooks.onFrame(m);
      } else if (m.op === 'connected') { this.session = m.session; hooks.onConnected(m); }
    };
    // The browser would reconnect on its own; the client does that itself,
    // from its positions, so the stream ends here.
    es.onerror = () => this.#end(this.disconnect?.code ?? 1006, this.disconnect?.reason ?? 'the event stream failed');
  }
  send(text) {
    if (!this.session) return;
    this.client.fetch(`${httpBase(this.client.url)}/sse?session=${this.session}`, {
      method: 'POST', body: text, headers: { 'Content-Type': 'application/json' }, credentials: credentials(this.client),
    }).then((r) => { if (r.status === 404) this.#end(1006, 'the server no longer knows this session'); },
      () => this.#end(1006, 'a command could not be sent'));
  }
  close() { this.closed = true; this.es?.close(); this.es = null; }
  #end(code, reason) {
    if (this.closed) return;
    this.close();
    this.hooks.onClose(code, reason);
  }
}

/** Cookies on fallback requests to another origin only when asked for
 * (`credentials: true`; the server must allow it: --cors-credentials). */
const credentials = (client) => (client.options.credentials ? 'include' : 'same-origin');

/** HTTP long-polling: the last resort, through anything that passes HTTP. */
class PollingTransport {
  constructor(client, connect, hooks) {
    this.name = 'polling';
    this.client = client;
    this.hooks = hooks;
    this.#loop(`${httpBase(client.url)}/poll?${connectQuery(connect)}`);
  }
  async #loop(url) {
    while (!this.closed) {
      let frames;
      try {
        const r = await this.client.fetch(url, { cache: 'no-store', credentials: credentials(this.client) });
        this.opened = true;
        if (r.status === 404) return this.#end(1006, 'the server no longer knows this session');
        // One bad object spoils the whole answer: it is reported, and the
        // connection ends (the next one resubscribes from each position).
        frames = parse(await r.text(), this.hooks.onUnreadable);
        if (!Array.isArray(frames)) throw new Error(frames === undefined ? 'the answer was not JSON' : `HTTP ${r.status}`);
      } catch (e) {
        return this.#end(1006, `poll failed: ${e.message}`);
      }
      for (const m of frames) {
        if (this.closed) return;
        if (!isObject(m)) { this.hooks.onUnreadable(unreadable(JSON.stringify(m), 'not a JSON object')); continue; }
        if (this.session) {
          this.hooks.onFrame(m);
          if (m.op === 'disconnect') return this.#end(m.code, m.reason);
        } else if (m.op === 'connected') { this.session = m.session; this.hooks.onConnected(m); }
        else if (m.op === 'error') return this.#end(4000, m.message);
      }
      url = `${httpBase(this.client.url)}/poll?session=${this.session}`;
    }
  }
  send(text) {
    if (!this.session) return;
    this.client.fetch(`${httpBase(this.client.url)}/poll?session=${this.session}`, {
      method: 'POST', body: text, headers: { 'Content-Type': 'application/json' }, credentials: credentials(this.client),
    }).catch(() => {});
  }
  close() { this.closed = true; }
  #end(code, reason) {
    if (this.closed) return;
    this.closed = true;
    this.hooks.onClose(code, reason);
  }
}

export const TRANSPORTS = { websocket: WebSocketTransport, sse: SseTransport, polling: PollingTransport };
