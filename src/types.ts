import type { DeferErrorCode } from './errors.js';

export type { DeferErrorCode };

/**
 * How a scope ended. Decided once per scope: at the response's `'close'`
 * (HTTP) or when `withDefer`'s `fn` settles (scope).
 *
 * @example
 * ```ts
 * const outcome: Outcome = { kind: 'http', statusCode: 201, ok: true, aborted: false };
 * ```
 */
export interface Outcome {
  /** `'http'` for a response, `'scope'` for `withDefer()`. */
  readonly kind: 'http' | 'scope';
  /** The status sent; absent on an abort before headers were sent, and on `'scope'` outcomes. */
  readonly statusCode?: number;
  /** `!aborted && statusCode < 400` for HTTP; "fn resolved" for scopes. */
  readonly ok: boolean;
  /** The response closed before it finished (client gone, socket destroyed, timeout). */
  readonly aborted: boolean;
  /** What `withDefer`'s `fn` threw (only on failed `'scope'` outcomes). */
  readonly error?: unknown;
}

/**
 * The single argument every deferred callback receives.
 *
 * @example
 * ```ts
 * defer(async ({ signal, outcome, name }) => {
 *   await fetch(url, { signal });
 *   log.info({ name, status: outcome.statusCode }, 'pinged');
 * });
 * ```
 */
export interface DeferContext {
  /** Aborted at the callback's timeout (`ERR_DEFER_TIMEOUT`) or when abandoned (`ERR_DEFER_ABANDONED`). */
  readonly signal: AbortSignal;
  /** The outcome of the scope the callback was registered in. */
  readonly outcome: Outcome;
  /** The callback's name. */
  readonly name: string;
}

/** A deferred callback: sync or async, called with a {@link DeferContext}. */
export type DeferCallbackFn = (context: DeferContext) => unknown;

/**
 * Options of one `defer()` call.
 *
 * @example
 * ```ts
 * defer(() => audit(user), { name: 'audit', always: true, timeout: 5_000 });
 * ```
 */
export interface DeferOptions {
  /** Run whatever the outcome (failed status, abort, runWhen false). */
  always?: boolean | undefined;
  /** A name: a later `defer()` with the same name replaces this one until it starts; `forget(name)` removes it. */
  name?: string | undefined;
  /** Milliseconds from the callback's start until its `signal` is aborted and it is reported as timed out. */
  timeout?: number | undefined;
}

/** What `onError` receives besides the error itself. Plain and JSON-serializable. */
export interface DeferErrorInfo {
  /** Where the error came from. */
  phase: 'callback' | 'timeout' | 'overflow' | 'abandoned';
  /** The callback's name; `undefined` for `waitUntil()` promises. */
  name: string | undefined;
  /** The scope's outcome; `undefined` before it is decided. */
  outcome: Outcome | undefined;
}

/** An error handler: receives exactly what was thrown or rejected. */
export type DeferErrorHandler = (error: unknown, info: DeferErrorInfo) => unknown;

/**
 * Options of `deferMiddleware()`, `withDeferHandler()` and `withDefer()`.
 *
 * @example
 * ```ts
 * app.use(deferMiddleware({ mode: 'parallel', timeout: 10_000, onError: (e, info) => log.error(e, info.name) }));
 * ```
 */
export interface DeferScopeOptions {
  /** Decides whether non-`always` callbacks run; default `(o) => o.ok`. Not consulted on aborts. */
  runWhen?: ((outcome: Outcome) => boolean) | undefined;
  /** `'sequential'` (default): one after another in registration order. `'parallel'`: all at once. */
  mode?: 'sequential' | 'parallel' | undefined;
  /** Receives this scope's errors instead of the process-wide handler. */
  onError?: DeferErrorHandler | undefined;
  /** Default per-callback timeout in ms. */
  timeout?: number | undefined;
  /** `withDefer()` only: settle once every callback of the invocation has settled. */
  await?: boolean | undefined;
}

/** What `drain()` resolves to: what settled during that call. */
export interface DrainSummary {
  /** Callbacks and `waitUntil` promises that fulfilled. */
  completed: number;
  /** Those that threw, rejected, timed out or were refused. */
  failed: number;
  /** Those given up by this call's deadline. */
  abandoned: number;
}

/** Process-wide settings for `configureDefer()`. */
export interface DeferConfig {
  /** Callbacks running at once in the process (default 16). */
  concurrency?: number | undefined;
  /** Callbacks waiting for a slot before new ones are refused (default 10 000). */
  maxQueued?: number | undefined;
  /** Deepest generation of nested `defer()` (default 100). */
  maxNestingDepth?: number | undefined;
  /** Receives errors of scopes that have no `onError` (default: stderr). */
  onError?: DeferErrorHandler | undefined;
}

/** What `deferStats()` returns. */
export interface DeferStats {
  /** Callbacks waiting for a slot now. */
  queued: number;
  /** Callbacks running now. */
  running: number;
  /** Callbacks and `waitUntil` promises fulfilled since process start. */
  completed: number;
  /** Threw, rejected or timed out since process start. */
  failed: number;
  /** Refused by overflow (queue bound or nesting cap) since process start. */
  dropped: number;
  /** Abandoned by a `drain()` deadline or at process exit since process start. */
  abandoned: number;
}
