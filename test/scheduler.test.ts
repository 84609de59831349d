/** Semantic 8: one bounded scheduler per process. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { configureDefer, defer, deferStats, DeferError, drain, withDefer, type DeferErrorInfo } from '../src/index.js';
import { gate } from './support/client.js';
import { getGc } from './support/gc.js';
import { S, setTimers } from '../src/core/state.js';

afterEach(async () => {
  configureDefer({ concurrency: undefined, maxQueued: undefined, maxNestingDepth: undefined, onError: undefined });
  await drain();
});

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('scheduler', () => {
  it('runs at most `concurrency` callbacks at once in the process', async () => {
    configureDefer({ concurrency: 3 });
    let now = 0;
    let peak = 0;
    const work = async () => {
      peak = Math.max(peak, ++now);
      await tick();
      now--;
    };
    await Promise.all(
      Array.from({ length: 5 }, () =>
        withDefer(() => {
          for (let i = 0; i < 4; i++) defer(work);
        }, { mode: 'parallel' }),
      ),
    );
    expect(deferStats().running).toBe(3);
    await drain();
    expect(peak).toBe(3);
  });

  it('a sequential scope holds one slot or one queue place; slots are handed out first come, first served', async () => {
    configureDefer({ concurrency: 1 });
    const order: string[] = [];
    const step = (label: string) => async () => {
      order.push(label);
      await tick();
    };
    await withDefer(() => ['a1', 'a2', 'a3'].forEach((l) => defer(step(l))));
    await withDefer(() => ['b1', 'b2', 'b3'].forEach((l) => defer(step(l))));
    expect(deferStats().queued).toBe(1);
    await drain();
    expect(order).toEqual(['a1', 'b1', 'a2', 'b2', 'a3', 'b3']);
  });

  it('refuses a callback offered while maxQueued already wait: reported synchronously, each on its own', async () => {
    const errors: [unknown, DeferErrorInfo][] = [];
    configureDefer({ concurrency: 1, maxQueued: 2, onError: (error, info) => errors.push([error, info]) });
    const hold = gate();
    const before = deferStats();
    let decided = false;
    await withDefer(
      () => {
        defer(() => hold.promise, { name: 'running' });
        for (const name of ['q1', 'q2', 'x1', 'x2']) defer(() => undefined, { name });
      },
      { mode: 'parallel' },
    ).then(() => (decided = true));
    // Reported during the invocation, before withDefer() resolved.
    expect(decided).toBe(true);
    expect(errors.map(([, info]) => [info.phase, info.name])).toEqual([
      ['overflow', 'x1'],
      ['overflow', 'x2'],
    ]);
    expect(errors[0]![0]).not.toBe(errors[1]![0]);
    for (const [error] of errors) {
      expect(error).toBeInstanceOf(DeferError);
      expect((error as DeferError).code).toBe('ERR_DEFER_OVERFLOW');
    }
    expect(deferStats().dropped - before.dropped).toBe(2);
    hold.open();
    await drain();
    // It recovers by itself.
    const ran: string[] = [];
    await withDefer(() => void defer(() => void ran.push('after')), { await: true });
    expect(ran).toEqual(['after']);
  });

  it('caps nesting: a callback that defers itself forever stops at maxNestingDepth', async () => {
    const errors: [unknown, DeferErrorInfo][] = [];
    configureDefer({ maxNestingDepth: 5 });
    let runs = 0;
    const again = () => {
      runs++;
      defer(again, { name: 'again' });
    };
    await withDefer(() => void defer(again, { name: 'again' }), {
      await: true,
      onError: (error, info) => errors.push([error, info]),
    });
    // Generation 0 plus 5 nested generations ran; generation 6 was refused.
    expect(runs).toBe(6);
    expect(errors).toHaveLength(1);
    expect((errors[0]![0] as DeferError).code).toBe('ERR_DEFER_OVERFLOW');
    expect(errors[0]![1]).toMatchObject({ phase: 'overflow', name: 'again' });
  });

  it('a withDefer inside a running callback runs in that slot, so nesting never deadlocks', async () => {
    configureDefer({ concurrency: 1 });
    const ran: string[] = [];
    await withDefer(
      () => {
        defer(async () => {
          await withDefer(
            () => {
              defer(() => void ran.push('inner 1'));
              defer(() => void ran.push('inner 2'));
            },
            { await: true, mode: 'parallel' },
          );
          ran.push('outer done');
        });
      },
      { await: true },
    );
    expect(ran).toEqual(['inner 1', 'inner 2', 'outer done']);
  });

  it('yields to the event loop during a long invocation', async () => {
    const events: string[] = [];
    let immediateRan = false;
    await withDefer(
      () => {
        setImmediate(() => {
          immediateRan = true;
        });
        for (let i = 0; i < 5000; i++) {
          defer(() => {
            if (immediateRan && events.length === 0) events.push(`immediate ran before callback ${i}`);
          });
        }
      },
      { await: true },
    );
    expect(events).toHaveLength(1);
    const index = Number(/callback (\d+)/.exec(events[0]!)![1]);
    expect(index).toBeGreaterThan(0);
    expect(index).toBeLessThanOrEqual(1000);
  });

  it('grows linearly: 20 000 named and unnamed callbacks in one scope all run once', async () => {
    let count = 0;
    await withDefer(
      () => {
        for (let i = 0; i < 10_000; i++) {
          defer(() => void count++);
          defer(() => void count++, { name: `n${i}` });
        }
      },
      { await: true },
    );
    expect(count).toBe(20_000);
  });

  it('does not keep a settled callback alive while the rest of its scope runs', async () => {
    const gc = getGc();
    expect(gc, 'global.gc (exposed through v8.setFlagsFromString)').toBeTypeOf('function');
    const second = gate();
    let started!: () => void;
    const secondStarted = new Promise<void>((resolve) => (started = resolve));
    let first: WeakRef<object> | undefined;
    const done = withDefer(
      () => {
        first = new WeakRef(defer(() => {}, { name: 'first' }));
        defer(async () => {
          started();
          await second.promise;
        });
      },
      { await: true },
    );
    await secondStarted;
    await tick(); // a WeakRef keeps its target until the job that made it has ended
    gc!();
    expect(first!.deref()).toBeUndefined();
    second.open();
    await done;
  });
});

describe('the idle check', () => {
  it('is armed outside any scope: a timer keeps the async context it was made in, and would keep the last scope alive', async () => {
    const previous = S.timers;
    const contexts: unknown[] = [];
    const restore = setTimers({
      setTimeout: (fn, ms, arg) => {
        contexts.push(S.als.getStore());
        return previous.setTimeout(fn, ms, arg);
      },
    });
    try {
      S.exitCheck = undefined; // an earlier test's check may still be armed: it now does nothing
      // The last pending callback settles inside its scope's context: that is where idle() runs.
      await withDefer(() => void defer(() => {}), { await: true });
    } finally {
      restore();
    }
    expect(contexts).toEqual([undefined]);
  });

  it("keeps the 'beforeExit' listener while work keeps coming, and removes it after a whole idle second", async () => {
    await drain(); // no listener
    S.exitCheck = undefined; // an earlier test's (real) check may still be armed: it now does nothing
    const checks: (() => void)[] = [];
    const restore = setTimers({
      setTimeout: (fn, _ms, arg) => {
        if ((fn as { name?: string }).name === 'idleCheck') checks.push(() => fn(arg));
        return undefined;
      },
    });
    const fire = () => checks.shift()!();
    try {
      const hooked = () => process.listeners('beforeExit').includes(S.onBeforeExit!);
      await withDefer(() => void defer(() => {}), { await: true });
      expect(hooked()).toBe(true);
      expect(checks).toHaveLength(1);
      // More work within the second: the check re-arms instead of cycling the listener.
      await withDefer(() => void defer(() => {}), { await: true });
      fire();
      expect(hooked()).toBe(true);
      expect(checks).toHaveLength(1);
      // A whole second with no new work: the listener goes.
      fire();
      expect(hooked()).toBe(false);
      expect(checks).toHaveLength(0);
      expect(S.exitCheck).toBeUndefined();
    } finally {
      restore();
    }
  });

  it('stops re-arming while work is merely still pending: vi.runAllTimers() ends with a callback that never settles', async () => {
    await drain();
    S.exitCheck = undefined; // an earlier test's (real) check may still be armed: it now does nothing
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const hold = gate();
    try {
      const hooked = () => process.listeners('beforeExit').includes(S.onBeforeExit!);
      await withDefer(() => void defer(() => {}), { await: true }); // arms the check
      await withDefer(() => void defer(() => hold.promise)); // new work, still pending
      expect(deferStats().running).toBe(1);
      // Before the fix this looped until vitest aborted after 10 000 timers.
      expect(vi.runAllTimers).not.toThrow();
      expect(vi.getTimerCount()).toBe(0);
      expect(S.exitCheck).toBeUndefined();
      // Still pending, so the listener stays: it reports the callback abandoned if the process exits.
      expect(hooked()).toBe(true);
      hold.open();
      await drain();
      expect(hooked()).toBe(false);
    } finally {
      hold.open();
      vi.useRealTimers();
    }
  });
});

describe('configureDefer() and deferStats()', () => {
  it('validates and merges: absent keys keep their value, undefined restores the default', () => {
    configureDefer({ concurrency: 2, maxQueued: 5 });
    configureDefer({ maxQueued: 7 });
    const probe = async () => {
      const hold = gate();
      await withDefer(() => {
        for (let i = 0; i < 3; i++) defer(() => hold.promise);
      }, { mode: 'parallel' });
      const stats = deferStats();
      hold.open();
      await drain();
      return stats;
    };
    return probe().then(async (stats) => {
      expect(stats.running).toBe(2);
      configureDefer({ concurrency: undefined });
      const restored = await probe();
      expect(restored.running).toBe(3);
    });
  });

  it.each([
    [{ concurrency: 0 }, /concurrency/],
    [{ concurrency: 1.5 }, /concurrency/],
    [{ maxQueued: -1 }, /maxQueued/],
    [{ maxNestingDepth: 0 }, /maxNestingDepth/],
    [{ onError: 'log' }, /onError/],
    [{ concurency: 4 }, /concurency/],
    [null, /object/],
  ])('refuses %o', (options, message) => {
    expect(() => configureDefer(options as never)).toThrow(message);
    expect(() => configureDefer(options as never)).toThrow(expect.objectContaining({ code: 'ERR_DEFER_INVALID_OPTIONS' }));
  });

  it('deferStats() has queued and running now, totals since start', () => {
    expect(Object.keys(deferStats()).sort()).toEqual(['abandoned', 'completed', 'dropped', 'failed', 'queued', 'running']);
  });
});

describe('dispatch under code that never yields', () => {
  it('starts queued callbacks rather than refuse work while slots are idle', async () => {
    const errors: unknown[] = [];
    configureDefer({ concurrency: 1, maxQueued: 10, onError: (error) => errors.push(error) });
    let ran = 0;
    // One scope after another from a chain of microtasks only: setImmediate never gets a turn meanwhile,
    // and the dispatch loop passes its 1 000-callback slice.
    for (let i = 0; i < 3000; i++) {
      await withDefer(
        () => {
          defer(async () => void ran++);
          defer(async () => void ran++); // waits in the queue, started by the dispatch loop
        },
        { mode: 'parallel' },
      );
    }
    await drain();
    expect(errors).toEqual([]);
    expect(ran).toBe(6000);
  });
});

describe('time slicing', () => {
  it('times slow synchronous callbacks one by one, and lets cheap ones share a clock read', async () => {
    const { setTimers } = await import('../src/core/state.js');
    let now = 1;
    let reads = 0;
    let yields = 0;
    const restore = setTimers({
      now: () => (reads++, now),
      setImmediate: (fn, arg) => (yields++, setImmediate(fn, arg)),
    });
    try {
      // 40 callbacks of 3 ms each: at least one yield every ~10 ms, i.e. every 4 or 5 callbacks.
      await withDefer(() => {
        for (let i = 0; i < 40; i++) defer(() => void (now += 3));
      }, { await: true });
      expect(yields).toBeGreaterThanOrEqual(40 / 5 - 1);
      // 900 callbacks of 1 µs: no time-based yield, and far fewer clock reads than callbacks.
      yields = 0;
      reads = 0;
      await withDefer(() => {
        for (let i = 0; i < 900; i++) defer(() => void (now += 0.001));
      }, { await: true });
      expect(yields).toBe(0);
      expect(reads).toBeLessThan(900 / 3);
    } finally {
      restore();
    }
  });

  it('notices slow callbacks after quick ones within 16 callbacks, then times them one by one', async () => {
    const { setTimers } = await import('../src/core/state.js');
    let now = 1;
    let ran = 0;
    const yieldsAt: number[] = [];
    const restore = setTimers({
      now: () => now,
      setImmediate: (fn, arg) => (yieldsAt.push(ran), setImmediate(fn, arg)),
    });
    try {
      // 200 callbacks of 1 µs (the stride grows to its bound), then 40 of 3 ms each.
      await withDefer(() => {
        for (let i = 0; i < 200; i++) defer(() => void (ran++, (now += 0.001)));
        for (let i = 0; i < 40; i++) defer(() => void (ran++, (now += 3)));
      }, { await: true });
      expect(ran).toBe(240);
      // The first yield comes at most 16 callbacks after the slow ones began.
      expect(yieldsAt[0]).toBeGreaterThan(200);
      expect(yieldsAt[0]).toBeLessThanOrEqual(200 + 16);
      // From then on every ~10 ms: at most 5 callbacks of 3 ms between two yields.
      for (let i = 1; i < yieldsAt.length; i++) expect(yieldsAt[i]! - yieldsAt[i - 1]!).toBeLessThanOrEqual(5);
      expect(yieldsAt.at(-1)).toBeGreaterThanOrEqual(240 - 5);
    } finally {
      restore();
    }
  });
});

describe('slot inheritance', () => {
  it('a withDefer opened by the fn of a withDefer inside a running callback inherits the same slot', async () => {
    // A job helper that opens a scope, calling a library that opens its own.
    configureDefer({ concurrency: 1 });
    const ran: string[] = [];
    await withDefer(
      () => {
        defer(async () => {
          await withDefer(
            async () => {
              await withDefer(() => void defer(() => void ran.push('innermost')), { await: true });
              ran.push('middle fn done');
            },
            { await: true },
          );
          ran.push('outer done');
        });
      },
      { await: true },
    );
    expect(ran).toEqual(['innermost', 'middle fn done', 'outer done']);
  });

  it('drain() from such a scope ignores the scopes that cannot finish before it', async () => {
    const ran: string[] = [];
    await withDefer(
      async () => {
        defer(() => void ran.push('outer'));
        await withDefer(async () => {
          defer(() => void ran.push('middle'));
          await withDefer(async () => {
            await drain(); // the middle and outer scopes wait for this fn: waiting for them would never end
            ran.push('drained');
          });
        });
      },
      { await: true },
    );
    expect(ran).toEqual(['drained', 'middle', 'outer']);
  });

  it('a withDefer opened by a callback stops inheriting its slot once that callback settled', async () => {
    configureDefer({ concurrency: 1 });
    const events: string[] = [];
    const gateB = gate();
    let peak = 0;
    await withDefer(() => {
      defer(() => {
        // Opened by A, not awaited: A settles right after.
        void withDefer(() => void defer(() => void events.push('nested ran')));
      });
      defer(async () => {
        events.push('B start');
        peak = Math.max(peak, deferStats().running);
        await gateB.promise;
        events.push('B end');
      });
    });
    await tick();
    await tick();
    expect(events).toEqual(['B start']);
    gateB.open();
    await drain();
    expect(events).toEqual(['B start', 'B end', 'nested ran']);
    expect(peak).toBe(1);
  });
});
