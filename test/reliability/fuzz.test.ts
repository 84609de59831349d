/**
 * A seeded random mix of everything at once: modes, names, forget(), timeouts,
 * nested defer() and withDefer(), waitUntil(), configureDefer() changes mid-run
 * and drain() deadlines, on fake timers. Whatever happens, the scheduler's
 * books must balance afterwards (no slot, queue place, running count, pending
 * count, live scope or wait left over) and the scheduler must still work.
 * SEEDS=2000 runs more (the default keeps `npm test` quick).
 */
import { afterEach, expect, it, vi } from 'vitest';
import { configureDefer, defer, drain, forget, waitUntil, withDefer, type DeferContext, type DeferOptions } from '../../src/index.js';
import { S } from '../../src/core/state.js';

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** mulberry32: a small, fast, seedable generator. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

afterEach(() => {
  vi.useRealTimers();
  configureDefer({ concurrency: undefined, maxQueued: undefined, onError: undefined, maxNestingDepth: undefined });
});

const KINDS = ['sync', 'async', 'throw', 'reject', 'hang', 'nested', 'withDefer', 'forget', 'wait'] as const;
const NAMES = ['a', 'b', 'c'];

for (let seed = 1; seed <= Number(process.env.SEEDS ?? 200); seed++) {
  it(`seed ${seed}: the books balance and the scheduler still works`, async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const rnd = prng(seed);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(rnd() * items.length)]!;
    const slots = () => ({ concurrency: 1 + Math.floor(rnd() * 3), maxQueued: Math.floor(rnd() * 4) });
    configureDefer({ onError: () => undefined, ...slots() });

    const makeCallback = (depth: number): ((context: DeferContext) => unknown) => {
      const kind = pick(KINDS);
      return async function fuzzed() {
        switch (kind) {
          case 'sync':
            return;
          case 'throw':
            throw new Error('thrown');
          case 'async':
            for (let i = rnd() * 3; i > 0; i--) await tick();
            return;
          case 'reject':
            await tick();
            throw new Error('rejected');
          case 'hang':
            await new Promise(() => undefined);
            return;
          case 'nested':
            if (depth < 3) defer(makeCallback(depth + 1), rnd() < 0.5 ? { name: pick(NAMES), timeout: 5 } : undefined);
            return;
          case 'withDefer':
            if (depth < 3) {
              await withDefer(
                () => {
                  defer(makeCallback(depth + 1), { timeout: 7 });
                  defer(makeCallback(depth + 1));
                },
                { await: rnd() < 0.5, mode: rnd() < 0.5 ? 'parallel' : 'sequential' },
              );
            }
            return;
          case 'forget':
            forget(pick(NAMES));
            return;
          case 'wait':
            waitUntil(tick());
            return;
        }
      };
    };

    for (let step = 0; step < 60; step++) {
      const r = rnd();
      if (r < 0.5) {
        const n = Math.floor(rnd() * 5);
        void withDefer(
          async () => {
            for (let i = 0; i < n; i++) {
              const options: DeferOptions = {};
              if (rnd() < 0.4) options.name = pick(NAMES);
              if (rnd() < 0.5) options.timeout = 1 + Math.floor(rnd() * 10);
              const cb = defer(makeCallback(0), options);
              if (rnd() < 0.3) cb.always();
              if (rnd() < 0.2) forget(pick(NAMES));
              if (rnd() < 0.3) await tick();
            }
            if (rnd() < 0.2) throw new Error('fn failed');
          },
          { mode: rnd() < 0.5 ? 'parallel' : 'sequential', await: rnd() < 0.3, timeout: rnd() < 0.5 ? 4 : undefined },
        ).catch(() => undefined);
      } else if (r < 0.6) {
        configureDefer(slots());
      } else if (r < 0.75) {
        await vi.advanceTimersByTimeAsync(Math.floor(rnd() * 5));
      } else if (r < 0.8) {
        const drained = drain({ timeout: 3 });
        await vi.advanceTimersByTimeAsync(3);
        await drained;
      } else {
        await tick();
      }
    }

    // Let everything that can finish, finish; abandon the rest.
    configureDefer({ concurrency: 8, maxQueued: 10_000 });
    for (let i = 0; i < 20; i++) {
      await vi.advanceTimersByTimeAsync(20);
      await tick();
    }
    const last = drain({ timeout: 1000 });
    await vi.advanceTimersByTimeAsync(1000);
    await last;
    for (let i = 0; i < 5; i++) await tick();
    expect({
      pending: S.pending,
      slots: S.slots,
      queued: S.queued,
      running: S.running,
      yielding: S.yielding,
      liveScopes: S.liveHead !== undefined,
      waits: S.waits.size,
    }).toEqual({ pending: 0, slots: 0, queued: 0, running: 0, yielding: false, liveScopes: false, waits: 0 });

    const ran: number[] = [];
    await withDefer(
      () => {
        for (let i = 0; i < 20; i++) defer(() => void ran.push(i));
      },
      { mode: 'parallel', await: true },
    );
    expect(ran).toHaveLength(20);
  });
}
