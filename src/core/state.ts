import { AsyncLocalStorage } from 'node:async_hooks';
import { performance } from 'node:perf_hooks';
import { codes, DeferError } from '../errors.js';
import type { DeferContext, DeferErrorHandler, DeferOptions } from '../types.js';
import type { DeferredCallback, GenFrame, Scope } from './engine.js';

/** Bumped whenever the shape of {@link State} changes incompatibly. */
export const PROTOCOL_VERSION = 1;

const KEY = Symbol.for('request-defer');

/**
 * What the async context holds: a scope (its own code, and its callbacks of
 * the first generation), or the frame of a nested generation of a scope.
 */
export type Frame = Scope | GenFrame;

/**
 * The clock and timers the core uses. Injectable (tests, simulations); by
 * default each call looks the global up at call time, so fake timers
 * installed later are honoured.
 */
/** The clock of a time-sliced loop (see sliceStep() in engine.ts). */
export interface Slice {
  /** Clock reading when the slice's clock started; -1 before that. */
  start: number;
  last: number;
  stride: number;
  until: number;
}

/** The armed idle check: `seen` is `activity` when it was (re-)armed; unchanged a second later means the process stayed idle. */
export interface IdleCheck {
  seen: number;
}

export interface Timers {
  now(): number;
  setTimeout<T>(fn: (arg: T) => void, ms: number, arg: T): unknown;
  clearTimeout(handle: unknown): void;
  setImmediate<T>(fn: (arg: T) => void, arg: T): unknown;
}

/** A `defer()` replacement installed by `fakeDefer()` or `withoutDefer()`. */
export interface Override {
  readonly kind: 'fake' | 'without';
  defer(fn: (context: DeferContext) => unknown, options: DeferOptions | undefined): DeferredCallback;
  forget(name: string): boolean;
}

export interface Wait {
  readonly scope: Scope | undefined;
  done: boolean;
}

export interface Drainer {
  readonly exclude: Scope[] | undefined;
  readonly completed: number;
  readonly failed: number;
  abandoned: number;
  resolve: ((summary: { completed: number; failed: number; abandoned: number }) => void) | undefined;
  timer: unknown;
}

/** Process-wide state shared by every copy of the package. */
export interface State {
  readonly version: number;
  readonly als: AsyncLocalStorage<Frame>;
  readonly config: {
    concurrency: number;
    maxQueued: number;
    maxNestingDepth: number;
    onError: DeferErrorHandler | undefined;
  };
  readonly stats: { completed: number; failed: number; dropped: number; abandoned: number };
  /** Callbacks running now (with or without a slot). */
  running: number;
  /** Scheduler slots in use. */
  slots: number;
  /** FIFO of callbacks waiting for a slot; removed entries are skipped lazily. */
  queue: (DeferredCallback | undefined)[];
  qHead: number;
  /** Live entries in `queue`. */
  queued: number;
  dispatching: boolean;
  /** The dispatch loop is waiting for `setImmediate` to give I/O a turn. */
  yielding: boolean;
  abandoning: boolean;
  /** Time slicing of the dispatch loop (see sliceStep() in engine.ts). */
  sliceRan: number;
  slice: Slice | undefined;
  /** Tracked units of work: registered callbacks not yet settled, plus waitUntil promises. */
  pending: number;
  /** Intrusive list of scopes holding tracked callbacks. */
  liveHead: Scope | undefined;
  readonly waits: Set<Wait>;
  readonly drainers: Drainer[];
  nextId: number;
  timers: Timers;
  override: Override | undefined;
  exitHooked: boolean;
  /** The unref'd idle check scheduled to remove the 'beforeExit' listener, if any. */
  exitCheck: IdleCheck | undefined;
  /** Times pending work went from none to some (busy() calls). */
  activity: number;
  onBeforeExit: (() => void) | undefined;
  /** Set while http.ts asks a response's 'close' listener for its scope instead of running it. */
  probe: { scope: Scope | undefined } | undefined;
}

export const DEFAULT_CONFIG = Object.freeze({
  concurrency: 16,
  maxQueued: 10_000,
  maxNestingDepth: 100,
  onError: undefined,
});

/** The real clock and timers; looked up at call time. */
export const realTimers: Timers = {
  now: () => performance.now(),
  setTimeout: (fn, ms, arg) => setTimeout(fn, ms, arg),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
  setImmediate: (fn, arg) => setImmediate(fn, arg),
};

function create(): State {
  return {
    version: PROTOCOL_VERSION,
    als: new AsyncLocalStorage<Frame>(),
    config: { ...DEFAULT_CONFIG },
    stats: { completed: 0, failed: 0, dropped: 0, abandoned: 0 },
    running: 0,
    slots: 0,
    queue: [],
    qHead: 0,
    queued: 0,
    dispatching: false,
    yielding: false,
    abandoning: false,
    sliceRan: 0,
    slice: undefined,
    pending: 0,
    liveHead: undefined,
    waits: new Set(),
    drainers: [],
    nextId: 0,
    timers: realTimers,
    override: undefined,
    exitHooked: false,
    exitCheck: undefined,
    activity: 0,
    onBeforeExit: undefined,
    probe: undefined,
  };
}

function load(): State {
  const g = globalThis as unknown as Record<symbol, State | undefined>;
  const existing = g[KEY];
  if (existing === undefined) {
    const created = create();
    Object.defineProperty(globalThis, KEY, { value: created, configurable: true, writable: false, enumerable: false });
    return created;
  }
  if (existing.version !== PROTOCOL_VERSION) {
    throw new DeferError(
      codes.ERR_DEFER_INCOMPATIBLE_COPY,
      `request-defer: this process already loaded a copy of request-defer with shared-state protocol ` +
        `${String(existing.version)}, and this copy speaks protocol ${PROTOCOL_VERSION}. Deduplicate the ` +
        `package (npm dedupe, or one version in package.json) so one copy serves the whole process.`,
    );
  }
  return existing;
}

/** The process-wide state, shared by every copy of the package. */
export const S: State = load();

/**
 * Replaces the clock and timers the core uses (tests, simulations). Returns
 * a function that restores the previous ones.
 * @internal
 */
export function setTimers(timers: Partial<Timers>): () => void {
  const previous = S.timers;
  S.timers = { ...previous, ...timers };
  return () => {
    S.timers = previous;
  };
}
