// Types for holdfast.js (served at /holdfast.d.ts next to /holdfast.js).

export interface CloseCodeInfo {
  code: number;
  name: string;
  /** Whether a client should reconnect after this code. */
  reconnect: boolean;
  meaning: string;
}

export declare const CLOSE_CODES: Record<number, [name: string, reconnect: boolean, meaning: string]>;
export declare function closeCodeInfo(code: number): CloseCodeInfo;
/** A JWT's `exp` (unix seconds), read without verifying; undefined for anything else. */
export declare function jwtExp(token: string | undefined): number | undefined;
export declare function resolveUrl(url?: string, page?: { protocol: string; host: string } | null): string;

export declare class Backoff {
  constructor(options?: { min?: number; max?: number; factor?: number; random?: () => number });
  /** The next delay in ms: uniform in [0, min(max, min * factor^attempt)). */
  next(): number;
  reset(): void;
}

export declare class Position {
  epoch: string | null;
  offset: number;
  subscribed(reply: { epoch: string; offset: number; recovered?: boolean }): 'fresh' | 'recovered' | 'lost';
  accept(message: { offset: number }): boolean;
  since(): { epoch: string; offset: number } | undefined;
}

export type State = 'connecting' | 'open' | 'reconnecting' | 'closing' | 'closed';

export interface ClientOptions {
  /** JWT sent in `connect`. */
  token?: string;
  /**
   * Where a fresh token comes from (your backend). Called before connecting when there is no
   * token or it expired (`token_expired`, close 4004), and 30 s before the token's `exp` to
   * `refresh` the open session.
   */
  getToken?: () => Promise<string>;
  backoff?: { min?: number; max?: number; factor?: number };
  /** Extra silence allowed after ping_interval_ms before the connection counts as dead (ms, default 5000). */
  pingGrace?: number;
  /** Command reply timeout, also the wait for a connection of queued calls (ms, default 10000). */
  commandTimeout?: number;
  /** Calls queued while disconnected (default 100). */
  queueLimit?: number;
  /** A connection that lived this long resets the backoff (ms, default 10000). */
  healthyAfter?: number;
  /** Transports to try, in order (default ['websocket', 'sse', 'polling']). */
  transports?: Array<'websocket' | 'sse' | 'polling'>;
  /** Start the next transport when the current one has not connected within this (ms, default 2000). */
  raceDelay?: number;
  /**
   * Send cookies with SSE and long-polling requests to another origin (default false;
   * the server must allow it with --cors-credentials). WebSocket always sends them.
   */
  credentials?: boolean;
  /** On a fallback transport, try WebSocket again this often (ms, default 30000). */
  upgradeInterval?: number;
  /** Remember a fallback transport that worked, per URL in localStorage, this long (ms, default 600000). */
  rememberFor?: number;
  /**
   * After a failure, tell the server what happened with the next `connect` (`report`: how the
   * last session or attempt ended, how long it lived, failed attempts, time to get back, why a
   * fallback transport is used; statistics only, see docs/PROTOCOL.md). Default true.
   */
  report?: boolean;
  /**
   * A WebSocket implementation where the runtime has none (Node before 22:
   * `(await import('ws')).WebSocket`); without one the client warns and uses SSE or long-polling.
   * Also a stand-in for tests, with the three below.
   */
  WebSocket?: typeof WebSocket;
  EventSource?: typeof EventSource;
  fetch?: typeof fetch;
  storage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> | null;
  /** Clock, for tests (default Date.now). */
  now?: () => number;
}

export interface Subscription {
  /** Resolves when the server confirmed the subscription (at once when not connected yet). */
  ready: Promise<unknown>;
  unsubscribe(): Promise<unknown>;
}

export declare class HoldfastClient extends EventTarget {
  /** @param url ws(s)://host/ws; derived from the page when omitted. */
  constructor(url?: string, options?: ClientOptions);
  readonly state: State;
  connect(): this;
  /** Closes for good (no reconnect); safe while still connecting. */
  close(): void;
  /**
   * With `latest`, the channel's newest publication comes first (`message.latest` true).
   * With `delta: 'fossil'` (where the namespace offers it) messages travel as
   * changes from the previous one; `onMessage` still gets whole data.
   */
  subscribe(
    channel: string,
    onMessage: (data: unknown, message: { channel: string; offset: number; data: unknown; latest?: true }) => void,
    options?: { latest?: boolean; delta?: 'fossil' },
  ): Subscription;
  unsubscribe(channel: string): Promise<unknown>;
  /** `skipped` says why nothing was published: a repeated `idempotency_key`, or a `version` not newer. */
  publish(
    channel: string,
    data: unknown,
    options?: { idempotency_key?: string; version?: number; version_epoch?: string },
  ): Promise<{ channel: string; epoch: string; offset: number; skipped?: 'duplicate' | 'not_newer' }>;
  addEventListener<K extends keyof HoldfastEvents>(
    type: K,
    listener: (event: CustomEvent<HoldfastEvents[K]>) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

export type Transport = 'websocket' | 'sse' | 'polling';

/** Who joined or left a channel, as presence shows a subscriber. */
export interface Member {
  channel: string;
  session: string;
  user: string | null;
  client: string | null;
  /** What the subscribe proxy said of that subscription (only on `join`). */
  info?: unknown;
}

/** The events a HoldfastClient dispatches (CustomEvent detail by type). */
export interface HoldfastEvents {
  state: {
    state: State;
    code?: number;
    name?: string;
    reconnect?: boolean;
    meaning?: string;
    reason?: string;
    /** ms until the next attempt. */
    delay?: number;
    waitingForOnline?: boolean;
    session?: string;
    transport?: Transport;
    pingIntervalMs?: number;
  };
  /** Back on WebSocket after a fallback. */
  upgrade: { from: Transport; to: 'websocket' };
  recovered: { channel: string; missed: number };
  /** The history no longer holds what this client missed: reload the state. */
  'recovery-failed': { channel: string; epoch: string; offset: number };
  /**
   * The server refused to resubscribe the channel after a reconnect for good (e.g.
   * permission_denied): it is no longer subscribed. A refusal that may pass
   * (broker_unavailable, backend_unavailable, rate_limited, too_many_channels) is retried
   * from the same position instead.
   */
  'subscribe-failed': { channel: string; code: string; message: string };
  /**
   * Another session subscribed to a channel this client holds (namespaces with
   * `join_leave`; never this client's own subscribe). Not kept in history: after a
   * reconnect, ask presence (through your backend) who is there.
   */
  join: Member;
  /** Another session unsubscribed from a channel this client holds, or its session ended. */
  leave: Member;
  watchdog: { silentFor: number };
  /** After an idle cut it asks the server for more frequent pings. */
  'ping-shortened': { from: number; to: number; silence: number };
  /**
   * Something the server sent is no JSON object (the line, cut to 200 characters, and why);
   * it is left out and the lines after it are still handled.
   */
  unreadable: { line: string; error: string };
  /** A refusal (`code`: the server's error code, or token_unavailable / refresh_failed). */
  error: Error & { code?: string };
}
