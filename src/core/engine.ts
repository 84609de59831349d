import { AsyncResource } from 'node:async_hooks';
import type { ServerResponse } from 'node:http';
import { format } from 'node:util';
import { codes, DeferError } from '../errors.js';
import { DEFAULT_SCOPE_OPTIONS, parseAlwaysValue, type ScopeOptions } from '../options.js';
import type { DeferContext, DeferErrorInfo, DeferOptions, Outcome } from '../types.js';
import { callbackChannel, scopeChannel, skipChannel } from './channels.js';
import { type Frame, type IdleCheck, S, type Slice } from './state.js';

/*
 * The core: scopes, their collections, the process-wide scheduler and the
 * bookkeeping drain() relies on. It knows nothing of any framework; adapters
 * open a scope, and decide its outcome when the response closes.
 *
 * Hot-path rules: nothing is allocated for a scope before its first defer();
 * a synchronous callback's terminate path creates no promise; messages for
 * diagnostics_channel are built only when someone subscribes.
 */

// Scope phases.
const OPEN = 0; // collecting: the response has not closed, withDefer's fn has not settled
const INVOKING = 1; // outcome decided, callbacks being offered and run
const DONE = 2; // every callback of the invocation settled

// Callback states.
const PENDING = 0; // registered, not yet offered to the scheduler
const QUEUED = 1; // waiting for a slot
const RUNNING = 2;
const SETTLED = 3; // fulfilled, failed, timed out or abandoned while running
const REMOVED = 4; // forgotten, replaced, skipped, refused or abandoned before it started

const YIELD_EVERY = 1000;
const YIELD_MS = 10;
const MAX_STRIDE = 16;

const BRAND_CALLBACK = Symbol.for('request-defer.DeferredCallback');
const BRAND_COLLECTION = Symbol.for('request-defer.DeferredCallbackCollection');

function branded(value: unknown, brand: symbol): boolean {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[brand] === true;
}

/** The outcome `withDefer` and `withoutDefer` give a scope whose work succeeded. */
export const SCOPE_OK: Outcome = Object.freeze({ kind: 'scope', ok: true, aborted: false });

/**
 * One unit of deferred work, as `defer()` returns it.
 *
 * @example
 * ```ts
 * const cb = defer(() => sendWelcomeMail(user), { name: 'welcome-mail' });
 * cb.name;      // 'welcome-mail'
 * cb.always();  // run it even if the response fails (Laravel's ->always())
 * ```
 */
export class DeferredCallback {
  /** @internal */ readonly fn: (context: DeferContext) => unknown;
  /** @internal */ readonly scope: Scope;
  /** @internal */ readonly id: number;
  /** The options given to `defer()` (`{}` when none were). */
  readonly options: Readonly<DeferOptions>;
  /** @internal */ readonly generation: number;
  /** @internal */ state = PENDING;
  /** @internal */ hasSlot = false;
  /** Position in its scope's `items`, cleared there once it settles or is removed. @internal */
  index = -1;
  /** The async context of the defer() call, restored to run the callback. @internal */
  resource: AsyncResource | undefined = undefined;
  /** What it was called with, while it runs (also holds its timer and trace). @internal */
  context: Context | undefined = undefined;
  private alwaysFlag: boolean;

  /** @internal */
  constructor(
    fn: (context: DeferContext) => unknown,
    scope: Scope,
    options: DeferOptions | undefined,
    generation: number,
  ) {
    this.fn = fn;
    this.scope = scope;
    this.id = ++S.nextId;
    this.options = options ?? EMPTY_OPTIONS;
    this.alwaysFlag = options?.always === true;
    this.generation = generation;
  }

  /** The `name` option. @internal */
  get explicitName(): string | undefined {
    return this.options.name;
  }

  /** The `timeout` option. @internal */
  get timeout(): number | undefined {
    return this.options.timeout;
  }

  /**
   * The `name` option, else a name unique in the process (`sendMail#12`,
   * from the function's own name when it has one).
   */
  get name(): string {
    return this.options.name ?? `${functionName(this.fn)}#${this.id}`;
  }

  /** Whether the callback runs whatever the outcome. */
  get isAlways(): boolean {
    return this.alwaysFlag;
  }

  /**
   * Marks the callback to run whatever the outcome (failed status, abort,
   * `runWhen` false), like Laravel's `defer(fn)->always()`. Returns itself.
   *
   * @example
   * ```ts
   * defer(() => audit('login-attempt', user)).always();
   * ```
   */
  always(value: boolean = true): this {
    this.alwaysFlag = parseAlwaysValue(value);
    return this;
  }

  static [Symbol.hasInstance](value: unknown): boolean {
    return branded(value, BRAND_CALLBACK);
  }
}
Object.defineProperty(DeferredCallback.prototype, BRAND_CALLBACK, { value: true });

const EMPTY_OPTIONS: Readonly<DeferOptions> = Object.freeze({});

/** A function's own name, else 'deferred'; never throws (a `name` getter may, a static `name()` is no string). */
function functionName(fn: unknown): string {
  try {
    const name = (fn as { name?: unknown }).name;
    return typeof name === 'string' && name !== '' ? name : 'deferred';
  } catch {
    return 'deferred';
  }
}

/**
 * The callbacks a scope holds: those registered and not yet started, in run
 * order. Get the current one with `currentCollection()`.
 *
 * @example
 * ```ts
 * const collection = currentCollection();
 * collection?.size;                  // callbacks waiting to run
 * [...(collection ?? [])].map((cb) => cb.name);
 * collection?.forget('welcome-mail');
 * ```
 */
export class DeferredCallbackCollection implements Iterable<DeferredCallback> {
  /** @internal */ readonly scope: Scope;

  /** @internal */
  constructor(scope: Scope) {
    this.scope = scope;
  }

  /** Callbacks registered and not yet started. */
  get size(): number {
    return this.scope.count;
  }

  /** The callbacks not yet started, in run order. */
  *[Symbol.iterator](): IterableIterator<DeferredCallback> {
    const items = this.scope.items ?? [];
    for (let i = 0; i < items.length; i++) {
      const cb = items[i];
      if (cb !== undefined && (cb.state === PENDING || cb.state === QUEUED)) yield cb;
    }
  }

  /**
   * Removes the named callback if it has not started; returns whether one
   * was removed.
   */
  forget(name: string): boolean {
    if (typeof name !== 'string') throw badName('DeferredCallbackCollection.forget()', name);
    return forgetIn(this.scope, name);
  }

  static [Symbol.hasInstance](value: unknown): boolean {
    return branded(value, BRAND_COLLECTION);
  }
}
Object.defineProperty(DeferredCallbackCollection.prototype, BRAND_COLLECTION, { value: true });

/** @internal */
export function badName(api: string, name: unknown): DeferError {
  return new DeferError(
    codes.ERR_DEFER_INVALID_OPTIONS,
    `${api} expects the callback's name (a string), but received ${typeof name}. Pass the name given to defer(fn, { name }).`,
  );
}

/** What a deferred callback receives. */
class Context implements DeferContext {
  readonly outcome: Outcome;
  /** @internal */ readonly cb: DeferredCallback;
  /** @internal */ timer: unknown = undefined;
  /** @internal */ trace: TraceMessage | undefined = undefined;
  private controller: AbortController | undefined = undefined;
  private reason: DeferError | undefined = undefined;

  constructor(cb: DeferredCallback, outcome: Outcome) {
    this.cb = cb;
    this.outcome = outcome;
  }

  get name(): string {
    return this.cb.name;
  }

  /** Created on first read: most callbacks never look at it. */
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.reason !== undefined) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  /** @internal */
  abort(reason: DeferError): void {
    this.reason = reason;
    this.controller?.abort(reason);
  }
}

interface TraceMessage {
  name: string;
  outcome: Outcome;
  generation: number;
  startedAt: number;
  result?: unknown;
  error?: unknown;
}

/**
 * A scope: one request, one `withDefer()` call. Also the async-context frame
 * code outside any running callback sees.
 * @internal
 */
export class Scope {
  readonly scope: Scope;
  /** Generation of callbacks registered while the scope is open. */
  readonly base: number;
  /** The scope whose running callback opened this one (withDefer inside a callback). */
  readonly parentScope: Scope | undefined;
  /** The callback of this scope started last. */
  lastStarted: DeferredCallback | undefined = undefined;
  readonly opts: ScopeOptions;
  readonly res: ServerResponse | undefined;
  /**
   * Registered callbacks in order (created by the first defer()); the
   * collection's storage. A callback's entry is emptied once it settles or
   * is removed, so a long invocation does not keep finished work alive.
   */
  items: (DeferredCallback | undefined)[] | undefined = undefined;
  /** Index of the next callback to offer. */
  cursor = 0;
  /** Callbacks registered and not yet started (the collection's size). */
  count = 0;
  /** What few scopes use (names, nesting, waiters), made on first use. */
  more: ScopeMore | undefined = undefined;
  phase = OPEN;
  outcome: Outcome | undefined = undefined;
  /** 0: not judged yet, 1: non-always callbacks run, 2: they are skipped. */
  verdict = 0;
  /** Callbacks offered and not yet settled (queued or running). */
  active = 0;
  /** Tracked callbacks of this scope (registered, not settled or removed). */
  pending = 0;
  /** Callbacks of this scope running now. */
  running = 0;
  /** LOOPING | SCHEDULED | YIELDING. */
  flags = 0;
  /** Time slicing of this scope's invocation (see sliceStep()). */
  sliceRan = 0;
  slice: Slice | undefined = undefined;
  livePrev: Scope | undefined = undefined;
  liveNext: Scope | undefined = undefined;

  constructor(opts: ScopeOptions, parent: Frame | undefined, res: ServerResponse | undefined) {
    this.scope = this;
    this.opts = opts;
    this.res = res;
    this.base = parent === undefined ? 0 : parent.childGen;
    // Opened from code running in a callback of another scope (see inheritsSlot()), or from the
    // fn of a scope that was itself so opened (withDefer in withDefer in a callback): that fn
    // still runs in the same callback, so the new scope shares its slot too.
    if (parent === undefined) {
      this.parentScope = undefined;
    } else if (insideCallback(parent)) {
      this.parentScope = parent.scope;
      more(this).parentCb = parent.scope.lastStarted;
    } else {
      const opener = parent.scope;
      this.parentScope = opener.parentScope;
      const m = more(this);
      m.opener = opener;
      if (opener.parentScope !== undefined) m.parentCb = opener.more?.parentCb;
    }
  }

  /**
   * The generation a defer() made with this scope as the current frame
   * gets: `base` while the scope is open (the handler's own code), one more
   * once its invocation started (code of its generation-`base` callbacks,
   * which run with the scope itself as their frame).
   */
  get childGen(): number {
    return this.phase === OPEN ? this.base : this.base + 1;
  }
}

/**
 * The fields of a scope that most never use: kept apart so that a request's
 * scope, allocated on every request and often promoted with the request's
 * objects, stays small.
 * @internal
 */
export class ScopeMore {
  /** The running callback of the parent scope that opened this one, when it can be told (a sequential parent runs one at a time). */
  parentCb: DeferredCallback | undefined = undefined;
  /** The open scope whose fn opened this one (withDefer in withDefer): it cannot finish before this one's fn. */
  opener: Scope | undefined = undefined;
  /** Pending callbacks by explicit name. */
  named: Map<string, DeferredCallback> | undefined = undefined;
  /** The public view returned by currentCollection(). */
  view: DeferredCallbackCollection | undefined = undefined;
  /** Frames for nested generations. */
  frames: GenFrame[] | undefined = undefined;
  /** Resolved when the invocation completes. */
  waiters: (() => void)[] | undefined = undefined;
  /** Resolved when an invocation that yielded has offered what it could (withDefer without await). */
  offerWaiters: (() => void)[] | undefined = undefined;
}

/**
 * The next scope out that cannot finish before this one's code does: the
 * open scope whose fn opened it, else the scope whose running callback did.
 * @internal
 */
export function enclosing(scope: Scope): Scope | undefined {
  const opener = scope.more?.opener;
  return opener !== undefined && opener.phase === OPEN ? opener : scope.parentScope;
}

/** @internal */
export function more(scope: Scope): ScopeMore {
  return (scope.more ??= new ScopeMore());
}

const LOOPING = 1; // pump() is running for the scope
const SCHEDULED = 2; // a microtask will start the invocation
const YIELDING = 4; // the invocation waits for setImmediate to give I/O a turn

/**
 * The async-context frame of callbacks of generation `childGen - 1` (> base)
 * of a scope. Callbacks of the scope's base generation run with the scope
 * itself as their frame, so the common case needs no frame of its own (no
 * `AsyncLocalStorage.run()` per callback).
 * @internal
 */
export class GenFrame {
  readonly scope: Scope;
  readonly childGen: number;
  constructor(scope: Scope, childGen: number) {
    this.scope = scope;
    this.childGen = childGen;
  }
}

// Frames are told apart by shape, not instanceof: a frame may come from another copy of the package.
function insideCallback(frame: Frame): boolean {
  return frame.scope !== frame || (frame as Scope).phase !== OPEN;
}

function genFrame(scope: Scope, childGen: number): GenFrame {
  const frames = (more(scope).frames ??= []);
  return (frames[childGen] ??= new GenFrame(scope, childGen));
}

function captureResource(): AsyncResource {
  return new AsyncResource('request-defer');
}

/**
 * Captures the async context of the defer() call for a callback of
 * generation `generation`, registered from `frame`.
 */
function capture(frame: Frame, generation: number): AsyncResource {
  // Registered while its scope is open: it will run with the scope as its frame.
  if (frame.scope === frame && (frame as Scope).phase === OPEN) return captureResource();
  return S.als.run(genFrame(frame.scope, generation + 1), captureResource);
}

// ---------------------------------------------------------------------------
// Registration

/**
 * Registers `fn` in the frame's scope. Nested and late registrations (the
 * scope's outcome is already decided) are offered on a microtask, after
 * `defer()` returned, so a chained `.always()` is seen.
 * @internal
 */
export function register(frame: Frame, fn: (context: DeferContext) => unknown, options: DeferOptions | undefined): DeferredCallback {
  const scope = frame.scope;
  const cb = new DeferredCallback(fn, scope, options, frame.childGen);
  if (tooDeep(cb)) return cb;
  cb.resource = capture(frame, cb.generation);
  if (cb.explicitName !== undefined) replaceNamed(scope, cb);
  const items = scope.items;
  if (items === undefined) {
    // Most scopes get one callback: an exact-size array (a push onto [] would
    // allocate room for 17, the most of what a request's scope keeps).
    cb.index = 0;
    scope.items = [cb];
  } else {
    cb.index = items.length;
    items.push(cb);
  }
  scope.count++;
  track(scope);
  if (scope.phase !== OPEN) schedulePump(scope);
  return cb;
}

/** Refuses (and reports) a callback whose generation is above maxNestingDepth. */
function tooDeep(cb: DeferredCallback): boolean {
  if (cb.generation <= S.config.maxNestingDepth) return false;
  cb.state = REMOVED;
  S.stats.dropped++;
  report(
    cb.scope,
    new DeferError(
      codes.ERR_DEFER_OVERFLOW,
      `Deferred callback "${cb.name}" was refused: it would be generation ${cb.generation} of nested defer() ` +
        `calls, above maxNestingDepth (${S.config.maxNestingDepth}). A callback that defers itself ` +
        `forever is a loop; raise maxNestingDepth with configureDefer() if the depth is intended.`,
    ),
    'overflow',
    cb.name,
  );
  return true;
}

/** Drops the callback from its scope's names if it holds its name. */
function unname(scope: Scope, cb: DeferredCallback): void {
  const named = scope.more?.named;
  if (named !== undefined && named.get(cb.explicitName!) === cb) named.delete(cb.explicitName!);
}

function replaceNamed(scope: Scope, cb: DeferredCallback): void {
  const named = (more(scope).named ??= new Map());
  const previous = named.get(cb.explicitName!);
  if (previous !== undefined && (previous.state === PENDING || previous.state === QUEUED)) remove(previous);
  named.set(cb.explicitName!, cb);
}

/** Removes a callback that has not started (forget, replacement). */
function remove(cb: DeferredCallback): void {
  const scope = cb.scope;
  const wasQueued = cb.state === QUEUED;
  discard(cb);
  if (cb.explicitName !== undefined) unname(scope, cb);
  if (wasQueued) {
    S.queued--;
    scope.active--;
  }
  untrack(scope);
  if (wasQueued) schedulePump(scope);
}

/**
 * A callback that never started leaves its scope (forgotten, replaced,
 * skipped, refused, or abandoned while waiting).
 */
function discard(cb: DeferredCallback): void {
  cb.state = REMOVED;
  cb.resource = undefined;
  cb.scope.count--;
  release(cb);
}

/** Empties the callback's entry in its scope's items (it settled or was removed). */
function release(cb: DeferredCallback): void {
  const items = cb.scope.items;
  if (items !== undefined && items[cb.index] === cb) items[cb.index] = undefined;
}

/** @internal */
export function forgetIn(scope: Scope, name: string): boolean {
  let cb = scope.more?.named?.get(name);
  if (cb === undefined) {
    // A generated name ("sendMail#12"): find the callback by its id.
    const hash = name.lastIndexOf('#');
    if (hash < 0) return false;
    const id = Number(name.slice(hash + 1));
    if (!Number.isInteger(id)) return false;
    cb = scope.items?.find((item) => item !== undefined && item.id === id && item.explicitName === undefined && item.name === name);
  }
  if (cb === undefined || (cb.state !== PENDING && cb.state !== QUEUED)) return false;
  remove(cb);
  return true;
}

// ---------------------------------------------------------------------------
// Tracking for drain() and beforeExit

function track(scope: Scope): void {
  if (scope.pending++ === 0) {
    const head = S.liveHead;
    scope.liveNext = head;
    if (head !== undefined) head.livePrev = scope;
    S.liveHead = scope;
  }
  if (S.pending++ === 0) busy();
}

function untrack(scope: Scope | undefined): void {
  if (scope !== undefined && --scope.pending === 0) {
    const { livePrev, liveNext } = scope;
    if (livePrev !== undefined) livePrev.liveNext = liveNext;
    else S.liveHead = liveNext;
    if (liveNext !== undefined) liveNext.livePrev = livePrev;
    scope.livePrev = scope.liveNext = undefined;
  }
  if (--S.pending === 0) idle();
  else if (S.drainers.length > 0) checkDrainers();
}

/** @internal */
export function trackWait(scope: Scope | undefined): void {
  if (scope !== undefined) track(scope);
  else if (S.pending++ === 0) busy();
}

/** @internal */
export { untrack as untrackWait };

/*
 * The 'beforeExit' listener is present only while work is pending. Adding and
 * removing a process listener costs microseconds (process re-checks signal
 * listeners on each; ~280 000 instructions on Node 20), too much to pay on
 * every request of a busy server that keeps going 0 → 1 → 0 pending. So it is
 * added on the first pending work and removed when drain() finds the process
 * idle, or by an unref'd check once a whole second has passed with no new
 * work (the check holds nothing open). While work keeps coming, the check
 * only re-arms itself, once a second: a busy server never cycles the
 * listener.
 */
function busy(): void {
  S.activity++;
  if (S.exitHooked) return;
  S.exitHooked = true;
  S.onBeforeExit ??= onBeforeExit;
  process.on('beforeExit', S.onBeforeExit);
}

function idle(): void {
  if (S.drainers.length > 0) {
    unhookExit();
    checkDrainers();
  } else if (S.exitHooked && S.exitCheck === undefined) {
    const check: IdleCheck = { seen: S.activity };
    S.exitCheck = check;
    // Outside the scope: a timer keeps the async context it was made in,
    // and this one would keep the last request's scope (and its response)
    // alive for a second.
    S.als.exit(armIdleCheck, check);
  }
}

function armIdleCheck(check: IdleCheck): void {
  const timer = S.timers.setTimeout(idleCheck, 1000, check) as { unref?: () => void } | undefined;
  timer?.unref?.();
}

function idleCheck(check: IdleCheck): void {
  // A check that is no longer the armed one (state reset by a test) does nothing.
  if (check !== S.exitCheck) return;
  if (S.exitHooked && S.activity !== check.seen) {
    // Work came within the last second: look again in a second (this
    // callback already runs outside any scope). Only new work re-arms it:
    // work that is merely still pending does not, so a callback that never
    // settles cannot keep a timer going forever; idle() arms a new check
    // when pending work reaches zero again.
    check.seen = S.activity;
    armIdleCheck(check);
    return;
  }
  S.exitCheck = undefined;
  unhookExit();
}

/** Removes the 'beforeExit' listener if nothing is pending. @internal */
export function unhookExit(): void {
  if (S.exitHooked && S.pending === 0) {
    S.exitHooked = false;
    process.removeListener('beforeExit', S.onBeforeExit!);
  }
}

function onBeforeExit(): void {
  // The event loop is empty: whatever is still pending holds nothing open
  // and would never run. Report it rather than lose it silently.
  if (S.pending > 0) abandonAll(undefined, undefined, EXITING);
}

/** @internal */
export function checkDrainers(): void {
  const drainers = S.drainers;
  for (let i = drainers.length - 1; i >= 0; i--) {
    const d = drainers[i]!;
    if (remaining(d) === 0) finishDrainer(d);
  }
}

/** @internal */
export function remaining(d: { exclude: Scope[] | undefined }): number {
  let n = S.pending;
  if (d.exclude !== undefined) for (const scope of d.exclude) n -= scope.pending;
  return n;
}

/** @internal */
export function finishDrainer(d: import('./state.js').Drainer): void {
  const i = S.drainers.indexOf(d);
  if (i >= 0) S.drainers.splice(i, 1);
  if (d.timer !== undefined) S.timers.clearTimeout(d.timer);
  d.timer = undefined;
  const resolve = d.resolve;
  d.resolve = undefined;
  resolve?.({
    completed: S.stats.completed - d.completed,
    failed: S.stats.failed + S.stats.dropped - d.failed,
    abandoned: d.abandoned,
  });
}

// ---------------------------------------------------------------------------
// Deciding the outcome

/** One outcome per status code (100–999) of a finished response, made on first use. */
const finishedOutcomes: (Outcome | undefined)[] = [];
const ABORTED_BEFORE_HEADERS: Outcome = Object.freeze({ kind: 'http', ok: false, aborted: true });

function finishedOutcome(statusCode: number): Outcome {
  return Object.freeze({ kind: 'http', statusCode, ok: statusCode < 400, aborted: false });
}

/** The HTTP outcome of a closed response. @internal */
export function httpOutcome(res: ServerResponse): Outcome {
  if (res.writableFinished) {
    // Outcomes are frozen: a finished response's is shared by every response with its status.
    // Node sent a status in 100–999; code that reassigns res.statusCode
    // after the fact gets an outcome of its own rather than a cache entry.
    const statusCode = res.statusCode;
    return statusCode >= 100 && statusCode <= 999 && (statusCode | 0) === statusCode
      ? (finishedOutcomes[statusCode] ??= finishedOutcome(statusCode))
      : finishedOutcome(statusCode);
  }
  return res.headersSent
    ? Object.freeze({ kind: 'http', statusCode: res.statusCode, ok: false, aborted: true })
    : ABORTED_BEFORE_HEADERS;
}

/**
 * The response closed: decide the outcome and invoke the collection. A
 * scope nobody deferred into costs nothing more here.
 * @internal
 */
export function closeResponseScope(scope: Scope): void {
  if (scope.phase !== OPEN) return;
  // Read now, not when a late defer() needs it: a handler still running after
  // an abort may yet call res.end(), which makes the response look finished.
  const outcome = httpOutcome(scope.res!);
  if (scope.pending === 0 && !scopeChannel.hasSubscribers) {
    scope.outcome = outcome;
    scope.phase = DONE;
    return;
  }
  decide(scope, outcome);
}

/**
 * Decides the scope's outcome and starts its invocation.
 * @internal
 */
export function decide(scope: Scope, outcome: Outcome): void {
  if (scope.phase !== OPEN) return;
  scope.outcome = outcome;
  scope.phase = INVOKING;
  if (scopeChannel.hasSubscribers) scopeChannel.publish({ outcome, size: scope.count });
  if (scope.items === undefined) {
    complete(scope);
    return;
  }
  pump(scope);
}

/** Whether non-`always` callbacks of the scope run. */
function passes(scope: Scope): boolean {
  if (scope.verdict === 0) {
    const outcome = scope.outcome!;
    let ok = false;
    if (!outcome.aborted) {
      const runWhen = scope.opts.runWhen;
      if (runWhen === undefined) ok = outcome.ok;
      else {
        try {
          ok = runWhen(outcome) === true;
        } catch (error) {
          ok = false;
          report(scope, error, 'callback', undefined, 'the scope\'s runWhen()');
        }
      }
    }
    scope.verdict = ok ? 1 : 2;
  }
  return scope.verdict === 1;
}

function skipReason(scope: Scope): 'status' | 'aborted' | 'runWhen' {
  const outcome = scope.outcome!;
  if (outcome.aborted) return 'aborted';
  return scope.opts.runWhen === undefined ? 'status' : 'runWhen';
}

// ---------------------------------------------------------------------------
// Invocation: offering a scope's callbacks to the scheduler

function schedulePump(scope: Scope): void {
  if (scope.flags !== 0) return;
  scope.flags = SCHEDULED;
  queueMicrotask(() => {
    scope.flags &= ~SCHEDULED;
    if (scope.phase === OPEN) return;
    scope.phase = INVOKING;
    pump(scope);
  });
}

function resumeScope(scope: Scope): void {
  scope.flags &= ~YIELDING;
  sliceReset(scope);
  pump(scope);
}

/** Does this scope run its callbacks in a running parent's slot? */
function inheritsSlot(scope: Scope): boolean {
  const parent = scope.parentScope;
  if (parent === undefined) return false;
  // A sequential parent runs one callback at a time: the one that opened this scope is known exactly.
  // A parallel parent's first-generation callbacks share one frame: any of them running will do.
  return parent.opts.parallel ? parent.running > 0 : scope.more?.parentCb?.state === RUNNING;
}

/**
 * Offers the scope's pending callbacks, in order: one at a time in
 * sequential mode, all in parallel mode. Re-entrant calls return at once;
 * the outer loop picks up what they would have done.
 */
function pump(scope: Scope): void {
  if ((scope.flags & (LOOPING | YIELDING)) !== 0 || scope.phase !== INVOKING) return;
  scope.flags |= LOOPING;
  for (;;) {
    if (scope.active > 0 && (!scope.opts.parallel || inheritsSlot(scope))) break;
    const items = scope.items!;
    let cb: DeferredCallback | undefined;
    while (scope.cursor < items.length) {
      const next = items[scope.cursor++];
      if (next !== undefined && next.state === PENDING) {
        cb = next;
        break;
      }
    }
    if (cb === undefined) break;
    if (sliceStep(scope)) {
      scope.cursor--;
      scope.flags |= YIELDING;
      S.timers.setImmediate(resumeScope, scope);
      break;
    }
    if (cb.isAlways || passes(scope)) offer(cb);
    else skip(cb);
  }
  scope.flags &= ~LOOPING;
  if ((scope.flags & YIELDING) !== 0) return;
  const offerWaiters = scope.more?.offerWaiters;
  if (offerWaiters !== undefined) {
    scope.more!.offerWaiters = undefined;
    for (const resolve of offerWaiters) resolve();
  }
  if (scope.active === 0 && scope.cursor >= scope.items!.length) complete(scope);
}

/** The counters of one time-sliced loop: a scope's invocation, or the scheduler's dispatch. */
interface SliceState {
  /** Callbacks run in this slice. */
  sliceRan: number;
  /** The slice's clock, made at its second callback (most scopes run one). */
  slice: Slice | undefined;
}

/**
 * Counts one more callback of a loop; true when the loop must yield to the
 * event loop now: after 1 000 callbacks, or once ~10 ms have passed. The
 * clock is not read for a slice's first callback (most scopes run one), and
 * then every `stride` callbacks, the stride doubling up to 16 while
 * callbacks are quick (a stride under 0.5 ms) and falling back to 1 as soon
 * as they are not, so slow synchronous callbacks are timed one by one and
 * cheap ones do not pay a clock read each.
 */
function sliceStep(t: SliceState): boolean {
  const ran = ++t.sliceRan;
  if (ran >= YIELD_EVERY) return true;
  if (ran === 1) return false;
  const c = (t.slice ??= { start: -1, last: 0, stride: 1, until: 0 });
  if (--c.until > 0) return false;
  const now = S.timers.now();
  if (c.start < 0) {
    c.start = c.last = now;
    c.stride = c.until = 1;
    return false;
  }
  if (now - c.start >= YIELD_MS) return true;
  c.stride = now - c.last < 0.5 ? Math.min(c.stride * 2, MAX_STRIDE) : 1;
  c.last = now;
  c.until = c.stride;
  return false;
}

function sliceReset(t: SliceState): void {
  t.sliceRan = 0;
  const c = t.slice;
  if (c !== undefined) {
    c.start = -1;
    c.until = 0;
  }
}

function complete(scope: Scope): void {
  if (scope.phase !== INVOKING) return;
  scope.phase = DONE;
  if (scope.items !== undefined) {
    // Release the callbacks; a late defer() starts a new array. (Not
    // `items.length = 0`: setting an array's length goes through the runtime,
    // a few hundred instructions on every request.)
    scope.items = undefined;
    scope.cursor = 0;
    if (scope.more !== undefined) scope.more.named = undefined;
  }
  const waiters = scope.more?.waiters;
  if (waiters !== undefined) {
    scope.more!.waiters = undefined;
    for (const resolve of waiters) resolve();
  }
}

/**
 * Resolves once the scope's callbacks have been handed to the scheduler: at
 * once, unless the invocation yielded to the event loop while offering them.
 * @internal
 */
export function whenOffered(scope: Scope): Promise<void> | undefined {
  if ((scope.flags & YIELDING) === 0) return undefined;
  return new Promise((resolve) => (more(scope).offerWaiters ??= []).push(resolve));
}

/** Resolves once the scope's invocation has completed. @internal */
export function whenDone(scope: Scope): Promise<void> {
  if (scope.phase === DONE) return Promise.resolve();
  return new Promise((resolve) => (more(scope).waiters ??= []).push(resolve));
}

function skip(cb: DeferredCallback): void {
  const scope = cb.scope;
  discard(cb);
  if (skipChannel.hasSubscribers) skipChannel.publish({ name: cb.name, outcome: scope.outcome, reason: skipReason(scope) });
  untrack(scope);
}

// ---------------------------------------------------------------------------
// The scheduler: one per process, `concurrency` slots, `maxQueued` waiting

function offer(cb: DeferredCallback): void {
  const scope = cb.scope;
  scope.active++;
  if (inheritsSlot(scope)) {
    start(cb, false);
    return;
  }
  if (S.slots < S.config.concurrency && S.queued === 0) {
    S.slots++;
    start(cb, true);
    return;
  }
  if (S.queued >= S.config.maxQueued && dispatchStalled()) {
    // The queue is full only because dispatch waits for its turn: let it start queued work first.
    resumeDispatch();
    if (cb.state !== PENDING) {
      scope.active--; // a callback started meanwhile forgot or replaced this one
      return;
    }
    if (S.slots < S.config.concurrency && S.queued === 0) {
      S.slots++;
      start(cb, true);
      return;
    }
  }
  if (S.queued < S.config.maxQueued) {
    cb.state = QUEUED;
    S.queue.push(cb);
    S.queued++;
    if (S.slots < S.config.concurrency) {
      if (dispatchStalled()) resumeDispatch();
      else dispatch();
    }
    return;
  }
  refuse(cb);
}

/**
 * Dispatch waits for its setImmediate turn, yet slots are idle. Code that
 * never yields to the event loop (a long chain of microtasks) would leave
 * them idle and fill the queue: new work arriving from outside the dispatch
 * loop restarts it (the loop itself still yields).
 */
function dispatchStalled(): boolean {
  return S.yielding && S.slots < S.config.concurrency && !S.dispatching && !S.abandoning;
}



function refuse(cb: DeferredCallback): void {
  const scope = cb.scope;
  scope.active--;
  discard(cb);
  S.stats.dropped++;
  report(
    scope,
    new DeferError(
      codes.ERR_DEFER_OVERFLOW,
      `Deferred callback "${cb.name}" was refused: ${S.config.maxQueued} callbacks already wait for one of ` +
        `${S.config.concurrency} slots. The process is overloaded; it recovers by itself when load drops. ` +
        `Raise concurrency or maxQueued with configureDefer(), or move this work to a queue (request-defer/bullmq).`,
    ),
    'overflow',
    cb.name,
  );
  untrack(scope);
}

/** Starts queued callbacks while slots are free. @internal */
export function dispatch(): void {
  if (S.dispatching || S.yielding || S.abandoning) return;
  S.dispatching = true;
  const queue = S.queue;
  while (S.slots < S.config.concurrency && S.queued > 0) {
    const cb = queue[S.qHead]!;
    queue[S.qHead++] = undefined;
    if (cb.state !== QUEUED) continue;
    S.queued--;
    if (sliceStep(S)) {
      queue[--S.qHead] = cb;
      S.queued++;
      S.yielding = true;
      S.timers.setImmediate(resumeDispatch, undefined);
      break;
    }
    S.slots++;
    start(cb, true);
  }
  if (S.qHead > 1024 && S.qHead * 2 > queue.length) {
    S.queue = queue.slice(S.qHead);
    S.qHead = 0;
  } else if (S.queued === 0 && S.qHead === queue.length) {
    queue.length = 0;
    S.qHead = 0;
  }
  S.dispatching = false;
}

function resumeDispatch(): void {
  S.yielding = false;
  sliceReset(S);
  dispatch();
}

// ---------------------------------------------------------------------------
// Running one callback

const OK = 0;
const FAILED = 1;
const TIMED_OUT = 2;
const ABANDONED = 3;

function start(cb: DeferredCallback, hasSlot: boolean): void {
  const scope = cb.scope;
  cb.state = RUNNING;
  cb.hasSlot = hasSlot;
  scope.count--;
  if (cb.explicitName !== undefined) unname(scope, cb);
  S.running++;
  scope.running++;
  scope.lastStarted = cb;
  const context = new Context(cb, scope.outcome!);
  cb.context = context;
  const timeout = cb.timeout ?? scope.opts.timeout;
  if (timeout !== undefined) context.timer = S.timers.setTimeout(onTimeout, timeout, context);
  const resource = cb.resource;
  cb.resource = undefined;
  if (resource === undefined) S.als.run(genFrame(scope, cb.generation + 1), invoke, cb);
  else resource.runInAsyncScope(invoke, undefined, cb);
}

function invoke(cb: DeferredCallback): void {
  const context = cb.context!;
  if (callbackChannel.hasSubscribers) {
    const message: TraceMessage = {
      name: cb.name,
      outcome: context.outcome,
      generation: cb.generation,
      startedAt: S.timers.now(),
    };
    context.trace = message;
    // Everything from here on runs in the stores start's subscribers bound,
    // as with Node's traceSync/tracePromise: end and error are published
    // inside them, and so are asyncStart and asyncEnd (from the reactions
    // watch() attaches there).
    callbackChannel.start.runStores(message, invokeTraced, undefined, cb, context, message);
    return;
  }
  let result: unknown;
  try {
    result = cb.fn(context);
  } catch (error) {
    settle(cb, FAILED, error);
    return;
  }
  watch(cb, result);
}

function invokeTraced(cb: DeferredCallback, context: Context, message: TraceMessage): void {
  let result: unknown;
  try {
    result = cb.fn(context);
  } catch (error) {
    // A synchronous failure ends the trace here (traceSync's shape).
    context.trace = undefined;
    message.error = error;
    callbackChannel.error.publish(message);
    callbackChannel.end.publish(message);
    settle(cb, FAILED, error);
    return;
  }
  message.result = result;
  callbackChannel.end.publish(message);
  if (!isThenable(result)) context.trace = undefined;
  watch(cb, result);
}

/** Settles the callback with what its result does: at once for a value, when it settles for a thenable. */
function watch(cb: DeferredCallback, result: unknown): void {
  if (result !== null && (typeof result === 'object' || typeof result === 'function')) {
    let then: unknown;
    try {
      then = (result as { then?: unknown }).then;
      if (typeof then === 'function') {
        (then as (ok: (v: unknown) => void, fail: (e: unknown) => void) => void).call(
          result,
          () => settle(cb, OK, undefined),
          (error) => settle(cb, FAILED, error),
        );
        return;
      }
    } catch (error) {
      settle(cb, FAILED, error);
      return;
    }
  }
  settle(cb, OK, undefined);
}

/** Whether `value` has a callable `then`; a `then` getter that throws counts as one (its read is where it fails). @internal */
export function isThenable(value: unknown): boolean {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return false;
  try {
    return typeof (value as { then?: unknown }).then === 'function';
  } catch {
    return true; // invoke() meets the throwing getter again and reports it
  }
}

function onTimeout(context: Context): void {
  context.timer = undefined;
  const cb = context.cb;
  if (cb.state !== RUNNING || cb.context !== context) return;
  const ms = cb.timeout ?? cb.scope.opts.timeout;
  settle(
    cb,
    TIMED_OUT,
    new DeferError(
      codes.ERR_DEFER_TIMEOUT,
      `Deferred callback "${cb.name}" timed out after ${ms} ms: its signal was aborted, its slot freed, and whatever ` +
        `it does from now on is ignored. If the work can stop early, make it honour context.signal; otherwise give ` +
        `it more time with defer(fn, { timeout }) or the scope's timeout option.`,
    ),
  );
}

/**
 * Settles a running callback once; anything it does after a timeout or an
 * abandonment is ignored.
 */
function settle(cb: DeferredCallback, kind: number, error: unknown): void {
  if (cb.state !== RUNNING) return;
  cb.state = SETTLED;
  const scope = cb.scope;
  const context = cb.context!;
  if (context.timer !== undefined) {
    S.timers.clearTimeout(context.timer);
    context.timer = undefined;
  }
  S.running--;
  scope.running--;
  if (kind === OK) {
    S.stats.completed++;
  } else {
    if (kind === ABANDONED) S.stats.abandoned++;
    else S.stats.failed++;
    if (kind !== FAILED) context.abort(error as DeferError);
    report(scope, error, kind === FAILED ? 'callback' : kind === TIMED_OUT ? 'timeout' : 'abandoned', cb.name);
  }
  const message = context.trace;
  if (message !== undefined) {
    context.trace = undefined;
    if (kind !== OK) {
      message.error = error;
      callbackChannel.error.publish(message);
    }
    callbackChannel.asyncStart.publish(message);
    callbackChannel.asyncEnd.publish(message);
  }
  cb.context = undefined;
  release(cb);
  scope.active--;
  if (cb.hasSlot) {
    cb.hasSlot = false;
    S.slots--;
    if (S.queued > 0) dispatch();
  }
  untrack(scope);
  pump(scope);
}

/**
 * Runs `fn` at once, in its own scope with a passing `'scope'` outcome,
 * without a scheduler slot (`withoutDefer()`).
 * @internal
 */
export function runNow(frame: Frame | undefined, fn: (context: DeferContext) => unknown, options: DeferOptions | undefined): DeferredCallback {
  const opts = frame === undefined ? DEFAULT_SCOPE_OPTIONS : frame.scope.opts;
  const scope = new Scope(opts, frame, undefined);
  scope.outcome = SCOPE_OK;
  scope.verdict = 1;
  const cb = new DeferredCallback(fn, scope, options, frame === undefined ? 0 : frame.childGen);
  if (tooDeep(cb)) return cb;
  cb.index = 0;
  scope.items = [cb];
  scope.count = 1;
  scope.cursor = 1;
  scope.phase = INVOKING;
  scope.flags = LOOPING; // settle() must not pump before start() returns
  track(scope);
  scope.active = 1;
  start(cb, false);
  scope.flags &= ~LOOPING;
  pump(scope);
  return cb;
}

// ---------------------------------------------------------------------------
// Abandonment (drain deadline, beforeExit)

/**
 * Abandons every tracked unit of work outside the excluded scopes: waiting
 * callbacks never start, running ones have their signal aborted, waitUntil
 * promises are given up. Each is reported once.
 * @internal
 */
export function abandonAll(exclude: Scope[] | undefined, drainer: { abandoned: number } | undefined, why: string): void {
  S.abandoning = true;
  const scopes: Scope[] = [];
  for (let s = S.liveHead; s !== undefined; s = s.liveNext) {
    if (exclude === undefined || !exclude.includes(s)) scopes.push(s);
  }
  const running: DeferredCallback[] = [];
  // First everything that waits, so freeing a running callback's slot starts nothing.
  for (const scope of scopes) {
    const items = scope.items;
    if (items === undefined) continue;
    for (const cb of items) {
      if (cb === undefined) continue;
      if (cb.state === RUNNING) running.push(cb);
      else if (cb.state === PENDING || cb.state === QUEUED) {
        const wasQueued = cb.state === QUEUED;
        discard(cb);
        if (wasQueued) {
          S.queued--;
          scope.active--;
        }
        // Counted before untrack(), which may finish the drainer.
        if (drainer !== undefined) drainer.abandoned++;
        S.stats.abandoned++;
        report(scope, abandonedError(cb.name, why), 'abandoned', cb.name);
        untrack(scope);
      }
    }
  }
  for (const wait of [...S.waits]) {
    if (wait.done || (exclude !== undefined && wait.scope !== undefined && exclude.includes(wait.scope))) continue;
    wait.done = true;
    S.waits.delete(wait);
    if (drainer !== undefined) drainer.abandoned++;
    S.stats.abandoned++;
    report(wait.scope, abandonedError(undefined, why), 'abandoned', undefined);
    untrack(wait.scope);
  }
  if (drainer !== undefined) drainer.abandoned += running.length;
  for (const cb of running) settle(cb, ABANDONED, abandonedError(cb.name, why));
  S.abandoning = false;
  for (const scope of scopes) pump(scope);
  dispatch();
}

const EXITING = 'the process reached beforeExit';

function abandonedError(name: string | undefined, why: string): DeferError {
  const what = name === undefined ? 'A waitUntil() promise' : `Deferred callback "${name}"`;
  const fix =
    why === EXITING
      ? ` with nothing left to keep it alive, so the work was waiting on something that can never happen ` +
        `(a promise nobody resolves, an unref'd timer). Make the work settle, or give it a timeout option ` +
        `so it fails visibly.`
      : `. Give drain() a longer timeout, or make the work finish sooner (a timeout option bounds each callback).`;
  return new DeferError(codes.ERR_DEFER_ABANDONED, `${what} was abandoned: ${why}${fix}`);
}

// ---------------------------------------------------------------------------
// Reporting

/**
 * Routes an error to exactly one handler: the scope's `onError`, else the
 * process-wide one, else stderr. A handler that throws or rejects has that
 * error written to stderr.
 * @internal
 */
export function report(
  scope: Scope | undefined,
  error: unknown,
  phase: DeferErrorInfo['phase'],
  name: string | undefined,
  label?: string,
): void {
  const info: DeferErrorInfo = { phase, name, outcome: scope?.outcome };
  const handler = scope?.opts.onError ?? S.config.onError;
  if (handler === undefined) {
    writeStderr(`request-defer: ${label ?? describeInfo(info)} failed (phase: ${phase}):`, error);
    return;
  }
  try {
    const result = handler(error, info);
    if (result !== null && typeof result === 'object' && typeof (result as PromiseLike<unknown>).then === 'function') {
      (result as PromiseLike<unknown>).then(undefined, (handlerError: unknown) =>
        writeStderr('request-defer: the onError handler rejected:', handlerError),
      );
    }
  } catch (handlerError) {
    writeStderr('request-defer: the onError handler threw:', handlerError);
  }
}

function describeInfo(info: DeferErrorInfo): string {
  return info.name === undefined ? 'a waitUntil() promise' : `deferred callback "${info.name}"`;
}

function writeStderr(what: string, error: unknown): void {
  try {
    process.stderr.write(`${format(what, error)}\n`);
  } catch {
    // stderr is gone; nothing left to tell
  }
}
