/**
 * Helpers shared by the reliability suites: an injected clock for the core's
 * timers (so nothing waits for real time), a seeded PRNG, event-loop turns,
 * and a watch on the process-level failure events.
 */
import { setTimers } from '../../src/core/state.js';
import { drain, type DrainSummary } from '../../src/index.js';

/** One macrotask turn (setImmediate is never faked). */
export const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Awaits turns of the event loop until `done()` holds; throws after `turns`
 * turns instead of hanging, so a deadlock fails fast and deterministically.
 */
export async function until(done: () => boolean, what: string, turns = 100_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (done()) return;
    await tick();
  }
  throw new Error(`still waiting for ${what} after ${turns} event-loop turns`);
}

/** Whether `promise` settles within `turns` event-loop turns (deadlock detector). */
export async function settlesWithin(promise: Promise<unknown>, turns: number): Promise<boolean> {
  let settled = false;
  void promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < turns && !settled; i++) await tick();
  return settled;
}

/** mulberry32: a small seeded PRNG, so every run of a suite makes the same mix. */
export function prng(seed: number): { next(): number; int(n: number): number; pick<T>(items: readonly T[]): T; chance(p: number): boolean } {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (items) => items[Math.floor(next() * items.length)]!,
    chance: (p) => next() < p,
  };
}

interface FakeTimer {
  at: number;
  fn: (arg: unknown) => void;
  arg: unknown;
}

export interface FakeClock {
  /** Timers set by the core and not yet fired or cleared. */
  readonly pending: number;
  /** Moves the clock forward and fires every timer that is due, in order. */
  advance(ms: number): void;
  restore(): void;
}

/**
 * Replaces the core's clock and timers (src/core/state.ts `setTimers`) with
 * a manual clock: callback timeouts and drain deadlines fire only when the
 * test advances it. setImmediate stays real, so yielding keeps working.
 */
export function fakeClock(): FakeClock {
  let now = 1_000_000;
  let seq = 0;
  const timers = new Map<number, FakeTimer>();
  const restore = setTimers({
    now: () => now,
    setTimeout: <T>(fn: (arg: T) => void, ms: number, arg: T): unknown => {
      const id = ++seq;
      timers.set(id, { at: now + ms, fn: fn as (arg: unknown) => void, arg });
      return id;
    },
    clearTimeout: (handle: unknown) => {
      timers.delete(handle as number);
    },
  });
  return {
    get pending() {
      return timers.size;
    },
    advance(ms) {
      now += ms;
      for (;;) {
        let dueId: number | undefined;
        let due: FakeTimer | undefined;
        for (const [id, timer] of timers) {
          if (timer.at <= now && (due === undefined || timer.at < due.at)) {
            dueId = id;
            due = timer;
          }
        }
        if (due === undefined) return;
        timers.delete(dueId!);
        due.fn(due.arg);
      }
    },
    restore,
  };
}

/**
 * drain() while moving the fake clock by `step` ms per event-loop turn, so
 * callbacks that hang are timed out as soon as they have started.
 */
export async function drainWithClock(clock: FakeClock, step: number, turns = 200_000): Promise<DrainSummary> {
  let summary: DrainSummary | undefined;
  void drain().then((s) => (summary = s));
  for (let i = 0; i < turns; i++) {
    await tick();
    if (summary !== undefined) return summary;
    clock.advance(step);
  }
  throw new Error(`drain() did not resolve after ${turns} turns`);
}

/** Records every unhandledRejection and uncaughtException while installed. */
export function watchProcess(): { events: [string, unknown][]; stop(): void } {
  const events: [string, unknown][] = [];
  const onRejection = (reason: unknown) => void events.push(['unhandledRejection', reason]);
  const onException = (error: unknown) => void events.push(['uncaughtException', error]);
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return {
    events,
    stop() {
      process.removeListener('unhandledRejection', onRejection);
      process.removeListener('uncaughtException', onException);
    },
  };
}

/** configureDefer() keys restored to their defaults (a key given as undefined restores it). */
export const DEFAULTS = { concurrency: undefined, maxQueued: undefined, maxNestingDepth: undefined, onError: undefined } as const;
