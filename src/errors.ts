/**
 * Every error the library throws or reports is a `DeferError` with a stable
 * `code` from this one table (mirrored in docs/errors.md).
 */
export const codes = {
  /** `defer()` was called outside any scope. */
  ERR_DEFER_NO_SCOPE: 'ERR_DEFER_NO_SCOPE',
  /** A callback that is not a function, a `waitUntil()` value that is not a thenable. */
  ERR_DEFER_INVALID_CALLBACK: 'ERR_DEFER_INVALID_CALLBACK',
  /** A bad or unknown option. */
  ERR_DEFER_INVALID_OPTIONS: 'ERR_DEFER_INVALID_OPTIONS',
  /** A callback passed its deadline (reported, phase `'timeout'`). */
  ERR_DEFER_TIMEOUT: 'ERR_DEFER_TIMEOUT',
  /** Refused by the queue bound or the nesting cap (reported, phase `'overflow'`). */
  ERR_DEFER_OVERFLOW: 'ERR_DEFER_OVERFLOW',
  /** Given up by a `drain()` deadline or at process exit (reported, phase `'abandoned'`). */
  ERR_DEFER_ABANDONED: 'ERR_DEFER_ABANDONED',
  /** `deferDispatch()` could not add its job (reported, original error as `cause`). */
  ERR_DEFER_ENQUEUE: 'ERR_DEFER_ENQUEUE',
  /** A second `fakeDefer()` while one is active. */
  ERR_DEFER_FAKE_ACTIVE: 'ERR_DEFER_FAKE_ACTIVE',
  /** A fake's method called after its `restore()`. */
  ERR_DEFER_FAKE_RESTORED: 'ERR_DEFER_FAKE_RESTORED',
  /** Two copies of request-defer with incompatible shared-state protocols in one process. */
  ERR_DEFER_INCOMPATIBLE_COPY: 'ERR_DEFER_INCOMPATIBLE_COPY',
} as const;

/** The stable codes a {@link DeferError} can carry. */
export type DeferErrorCode = keyof typeof codes;

const BRAND = Symbol.for('request-defer.DeferError');

/**
 * The only error class the library's API throws. Match on `code`, never on
 * the message: codes are stable, messages may improve.
 *
 * `instanceof DeferError` holds across copies of the package (its ESM and
 * CJS builds, or two installs), through a shared brand.
 *
 * @example
 * ```ts
 * import { defer, DeferError } from 'request-defer';
 *
 * try {
 *   defer(() => sendMail());
 * } catch (error) {
 *   if (error instanceof DeferError && error.code === 'ERR_DEFER_NO_SCOPE') {
 *     // called outside a request: open a scope with withDefer()
 *   }
 * }
 * ```
 */
export class DeferError extends Error {
  /** The stable code, one of {@link DeferErrorCode}. */
  readonly code: DeferErrorCode;

  constructor(code: DeferErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

Object.defineProperty(DeferError.prototype, 'name', { value: 'DeferError', writable: true, configurable: true });
Object.defineProperty(DeferError.prototype, BRAND, { value: true });

/** @internal */
export function noScopeError(api: string): DeferError {
  return new DeferError(
    codes.ERR_DEFER_NO_SCOPE,
    `${api} was called outside a request scope. Add deferMiddleware() (request-defer/express or ` +
      `request-defer/koa) or withDeferHandler() (request-defer/node) before the route, or wrap the ` +
      `work in withDefer(() => …) for scripts, jobs and tests. Inside a request this means the async ` +
      `context was lost on the way (code run from a timer or pool set up at startup, a library that queues ` +
      `callbacks): bind the callback where you hand it over with AsyncResource.bind() from node:async_hooks.`,
  );
}

/** @internal */
export function invalidCallbackError(api: string, what: string, got: unknown): DeferError {
  if (api === 'defer()' && looksLikePromise(got)) {
    // The classic slip: defer(sendMail(user)) runs the work now and hands defer() its promise.
    return new DeferError(
      codes.ERR_DEFER_INVALID_CALLBACK,
      `defer() expects a function as its callback, but received a promise: the work already started when its ` +
        `argument was evaluated. Pass a function that starts it: defer(() => sendMail(user)), not defer(sendMail(user)).`,
    );
  }
  return new DeferError(
    codes.ERR_DEFER_INVALID_CALLBACK,
    `${api} expects ${what}, but received ${describe(got)}. Pass ${what}.`,
  );
}

/** Only to word the message: unlike the engine's isThenable(), a `then` getter that throws makes this false ("an object"). */
function looksLikePromise(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  try {
    return typeof (value as { then?: unknown }).then === 'function';
  } catch {
    return false;
  }
}

/** @internal */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'string':
      return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
    case 'object':
      return 'an object';
    case 'undefined':
      return 'undefined';
    case 'function':
      return 'a function';
    default:
      return `${typeof value} ${String(value)}`;
  }
}
