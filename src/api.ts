import { invalidCallbackError, noScopeError } from './errors.js';
import {
  abandonAll,
  badName,
  checkDrainers,
  decide,
  DeferredCallback,
  DeferredCallbackCollection,
  dispatch,
  enclosing,
  finishDrainer,
  forgetIn,
  isThenable,
  more,
  register,
  remaining,
  report,
  Scope,
  SCOPE_OK,
  trackWait,
  unhookExit,
  untrackWait,
  whenDone,
  whenOffered,
} from './core/engine.js';
import { DEFAULT_CONFIG, type Drainer, type Frame, S, type Wait } from './core/state.js';
import { parseConfig, parseDeferOptions, parseDrainOptions, parseScopeOptions } from './options.js';
import type { DeferConfig, DeferContext, DeferOptions, DeferScopeOptions, DeferStats, DrainSummary } from './types.js';

/**
 * Registers `callback` to run after the current response has been sent
 * (or after `withDefer`'s `fn` settled), only if the outcome passed
 * (status < 400 by default) unless it is marked `always`. Callable from any
 * depth of the call stack: the scope travels in `AsyncLocalStorage`.
 *
 * Throws `ERR_DEFER_INVALID_CALLBACK` / `ERR_DEFER_INVALID_OPTIONS` for bad
 * arguments and `ERR_DEFER_NO_SCOPE` outside a scope.
 *
 * @example
 * ```ts
 * import { defer } from 'request-defer';
 *
 * export async function signUp(input: SignUp) {
 *   const user = await users.create(input);
 *   defer(() => mailer.sendWelcome(user), { name: 'welcome-mail' });
 *   defer(() => audit('signup', user.id)).always();
 *   return user;
 * }
 * ```
 */
export function defer(callback: (context: DeferContext) => unknown, options?: DeferOptions): DeferredCallback {
  if (typeof callback !== 'function') throw invalidCallbackError('defer()', 'a function as its callback', callback);
  const parsed = options === undefined ? undefined : parseDeferOptions(options, 'defer()');
  const override = S.override;
  if (override !== undefined) return override.defer(callback, parsed);
  const frame = S.als.getStore();
  if (frame === undefined) throw noScopeError('defer()');
  return register(frame, callback, parsed);
}

/**
 * Removes the named callback of the current scope if it has not started;
 * returns `true` if one was removed. Outside a scope it returns `false`.
 *
 * @example
 * ```ts
 * defer(() => recomputeCart(cart), { name: 'recompute-cart' });
 * if (cart.isEmpty()) forget('recompute-cart');
 * ```
 */
export function forget(name: string): boolean {
  const override = S.override;
  const scope = S.als.getStore()?.scope;
  // Outside a scope there is nothing to forget: false, and never a throw (even for a bad name).
  if (override === undefined && scope === undefined) return false;
  if (typeof name !== 'string') {
    if (scope === undefined) return false;
    throw badName('forget()', name);
  }
  if (override !== undefined) return override.forget(name);
  return forgetIn(scope!, name);
}

/**
 * Tracks work that has already started (a promise or thenable): it never
 * delays the response and takes no scheduler slot, its rejection is
 * reported like a callback's, and `drain()` waits for it. Works inside and
 * outside a scope.
 *
 * @example
 * ```ts
 * waitUntil(analytics.track('page_view', { path: req.path }));
 * ```
 */
export function waitUntil(promise: PromiseLike<unknown>): undefined {
  // A `then` getter that throws counts as a thenable: Promise.resolve() below turns it into a reported rejection.
  if (!isThenable(promise)) throw invalidCallbackError('waitUntil()', 'a promise or thenable', promise);
  const scope = S.als.getStore()?.scope;
  const wait: Wait = { scope, done: false };
  S.waits.add(wait);
  trackWait(scope);
  Promise.resolve(promise).then(
    () => settleWait(wait, undefined, false),
    (error: unknown) => settleWait(wait, error, true),
  );
  return undefined;
}

function settleWait(wait: Wait, error: unknown, failed: boolean): void {
  if (wait.done) return; // abandoned by a drain() deadline: ignored from then on
  wait.done = true;
  S.waits.delete(wait);
  if (failed) {
    S.stats.failed++;
    report(wait.scope, error, 'callback', undefined);
  } else {
    S.stats.completed++;
  }
  untrackWait(wait.scope);
}

/**
 * Runs `fn` in a fresh scope (a CLI command, a queue job, a cron tick, a
 * test). When `fn` settles the scope's outcome is decided (`ok` when it
 * resolved) and its callbacks are handed to the scheduler. Resolves to
 * `fn`'s value or rejects with exactly what `fn` threw; with
 * `{ await: true }` it settles only after every callback of the invocation
 * has settled.
 *
 * @example
 * ```ts
 * import { defer, withDefer } from 'request-defer';
 *
 * await withDefer(async () => {
 *   await importUsers(file);
 *   defer(() => notifyAdmins('import done'));
 * }, { await: true });
 * ```
 */
export function withDefer<T>(fn: () => T | PromiseLike<T>, options?: DeferScopeOptions): Promise<Awaited<T>> {
  if (typeof fn !== 'function') throw invalidCallbackError('withDefer()', 'a function to run in the scope', fn);
  const opts = parseScopeOptions(options, 'withDefer()', true);
  const scope = new Scope(opts, S.als.getStore(), undefined);
  return runScope(scope, fn, opts.await);
}

async function runScope<T>(scope: Scope, fn: () => T | PromiseLike<T>, wait: boolean): Promise<Awaited<T>> {
  let value: Awaited<T>;
  try {
    value = await S.als.run(scope, fn);
  } catch (error) {
    decide(scope, Object.freeze({ kind: 'scope', ok: false, aborted: false, error }));
    await (wait ? whenDone(scope) : whenOffered(scope));
    throw error;
  }
  decide(scope, SCOPE_OK);
  await (wait ? whenDone(scope) : whenOffered(scope));
  return value;
}

/**
 * Waits until no deferred work is pending in the process: callbacks of
 * invoked scopes, callbacks held by scopes still open, nested and late ones,
 * and `waitUntil` promises. It ignores the scope it is called from. With
 * `timeout`, whatever is still pending at the deadline is abandoned and
 * reported (`ERR_DEFER_ABANDONED`). Resolves to what settled during this call.
 *
 * @example
 * ```ts
 * process.once('SIGTERM', () => {
 *   server.close(async () => {
 *     const { abandoned } = await drain({ timeout: 10_000 });
 *     process.exit(abandoned > 0 ? 1 : 0);
 *   });
 * });
 * ```
 */
export function drain(options?: { timeout?: number | undefined }): Promise<DrainSummary> {
  const { timeout } = parseDrainOptions(options);
  const exclude = excluded(S.als.getStore());
  const drainer: Drainer = {
    exclude,
    completed: S.stats.completed,
    failed: S.stats.failed + S.stats.dropped,
    abandoned: 0,
    resolve: undefined,
    timer: undefined,
  };
  return new Promise<DrainSummary>((resolve) => {
    drainer.resolve = resolve;
    if (remaining(drainer) === 0) {
      unhookExit();
      finishDrainer(drainer);
      return;
    }
    S.drainers.push(drainer);
    if (timeout !== undefined) drainer.timer = S.timers.setTimeout(expireDrainer, timeout, drainer);
  });
}

function expireDrainer(drainer: Drainer): void {
  drainer.timer = undefined;
  if (drainer.resolve === undefined) return;
  abandonAll(drainer.exclude, drainer, 'drain() reached its deadline');
  checkDrainers();
  if (drainer.resolve !== undefined) finishDrainer(drainer);
}

/**
 * The scope drain() was called from, and every scope that cannot finish
 * before it: those whose running callbacks opened it, and those whose open
 * fn did (withDefer in withDefer).
 */
function excluded(frame: Frame | undefined): Scope[] | undefined {
  if (frame === undefined) return undefined;
  const scopes: Scope[] = [];
  let scope: Scope | undefined = frame.scope;
  while (scope !== undefined) {
    scopes.push(scope);
    scope = enclosing(scope);
  }
  return scopes;
}

/**
 * The current scope's {@link DeferredCallbackCollection}, or `undefined`
 * outside a scope (the safe twin of `defer()`'s throwing lookup).
 *
 * @example
 * ```ts
 * const pending = currentCollection()?.size ?? 0;
 * ```
 */
export function currentCollection(): DeferredCallbackCollection | undefined {
  const scope = S.als.getStore()?.scope;
  if (scope === undefined) return undefined;
  const extra = more(scope);
  return (extra.view ??= new DeferredCallbackCollection(scope));
}

/**
 * Process-wide settings, validated and merged: an absent key keeps its
 * value, a key given as `undefined` restores its default. Shared by every
 * copy of the package in the process.
 *
 * @example
 * ```ts
 * configureDefer({ concurrency: 32, maxQueued: 50_000, onError: (error, info) => log.error({ err: error, ...info }) });
 * ```
 */
export function configureDefer(options: DeferConfig): void {
  const parsed = parseConfig(options);
  const config = S.config;
  const given = options as Record<string, unknown>;
  for (const key of ['concurrency', 'maxQueued', 'maxNestingDepth', 'onError'] as const) {
    if (!Object.hasOwn(given, key)) continue;
    const value = parsed[key];
    (config as Record<string, unknown>)[key] = value === undefined ? DEFAULT_CONFIG[key] : value;
  }
  if (S.queued > 0) dispatch();
}

/**
 * Counters for health endpoints: `queued` and `running` now; `completed`,
 * `failed`, `dropped` (refused by overflow) and `abandoned` since process start.
 *
 * @example
 * ```ts
 * app.get('/health', (req, res) => res.json({ defer: deferStats() }));
 * ```
 */
export function deferStats(): DeferStats {
  return {
    queued: S.queued,
    running: S.running,
    completed: S.stats.completed,
    failed: S.stats.failed,
    dropped: S.stats.dropped,
    abandoned: S.stats.abandoned,
  };
}
