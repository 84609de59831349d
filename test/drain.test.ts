/** Semantic 9: per-callback timeouts, drain() and abandonment. */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  configureDefer,
  currentCollection,
  defer,
  deferStats,
  DeferError,
  drain,
  waitUntil,
  withDefer,
  type DeferErrorInfo,
} from '../src/index.js';
import { gate } from './support/client.js';

const reported: [unknown, DeferErrorInfo][] = [];
const onError = (error: unknown, info: DeferErrorInfo) => void reported.push([error, info]);

beforeEach(() => {
  reported.length = 0;
  configureDefer({ onError });
});

afterEach(async () => {
  vi.useRealTimers();
  configureDefer({ concurrency: undefined, maxQueued: undefined, onError: undefined });
  await drain();
});

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('timeouts', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  });

  it('aborts the signal with the reported DeferError, frees the slot and starts the next callback', async () => {
    let signal: AbortSignal | undefined;
    const events: string[] = [];
    await withDefer(() => {
      defer(
        async (ctx) => {
          signal = ctx.signal;
          events.push('hang start');
          await new Promise(() => undefined);
        },
        { name: 'hangs', timeout: 50 },
      );
      defer(() => void events.push('next'));
    });
    await tick();
    expect(events).toEqual(['hang start']);
    await vi.advanceTimersByTimeAsync(49);
    expect(signal!.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(signal!.aborted).toBe(true);
    expect(signal!.reason).toBeInstanceOf(DeferError);
    expect((signal!.reason as DeferError).code).toBe('ERR_DEFER_TIMEOUT');
    expect(events).toEqual(['hang start', 'next']);
    expect(reported).toHaveLength(1);
    expect(reported[0]![0]).toBe(signal!.reason);
    expect(reported[0]![1]).toEqual({ phase: 'timeout', name: 'hangs', outcome: { kind: 'scope', ok: true, aborted: false } });
    expect((reported[0]![0] as Error).message).toMatch(/"hangs" timed out after 50 ms/);
  });

  it('ignores whatever the callback does after its deadline', async () => {
    const late = gate();
    const before = deferStats();
    await withDefer(() => {
      defer(
        async () => {
          await late.promise;
          throw new Error('too late to matter');
        },
        { timeout: 10 },
      );
    });
    await vi.advanceTimersByTimeAsync(10);
    expect(reported).toHaveLength(1);
    late.open();
    await tick();
    await tick();
    expect(reported).toHaveLength(1);
    const after = deferStats();
    expect(after.failed - before.failed).toBe(1);
    expect(after.completed - before.completed).toBe(0);
  });

  it('counts from the start, not while the callback waits for a slot', async () => {
    configureDefer({ concurrency: 1 });
    const holder = gate();
    let timedOut = false;
    await withDefer(
      () => {
        defer(() => holder.promise, { name: 'holder' });
        defer(
          async (ctx) => {
            ctx.signal.addEventListener('abort', () => (timedOut = true));
            await new Promise(() => undefined);
          },
          { name: 'waits', timeout: 50 },
        );
      },
      { mode: 'parallel' },
    );
    await vi.advanceTimersByTimeAsync(100);
    expect(timedOut).toBe(false);
    expect(deferStats().queued).toBe(1);
    holder.open();
    await tick();
    await vi.advanceTimersByTimeAsync(49);
    expect(timedOut).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(timedOut).toBe(true);
  });

  it("uses the scope's timeout as the default; a callback's own timeout wins", async () => {
    const aborted: string[] = [];
    const hang = (name: string) => async (ctx: { signal: AbortSignal }) => {
      ctx.signal.addEventListener('abort', () => aborted.push(name));
      await new Promise(() => undefined);
    };
    await withDefer(
      () => {
        defer(hang('scope-default'));
        defer(hang('own'), { timeout: 5 });
      },
      { timeout: 20, mode: 'parallel' },
    );
    await vi.advanceTimersByTimeAsync(5);
    expect(aborted).toEqual(['own']);
    await vi.advanceTimersByTimeAsync(15);
    expect(aborted).toEqual(['own', 'scope-default']);
  });

  it('a lazily read signal of a timed-out callback is already aborted', async () => {
    const reads = gate<AbortSignal>();
    const resume = gate();
    await withDefer(() => {
      defer(
        async (ctx) => {
          await resume.promise;
          reads.open(ctx.signal);
        },
        { timeout: 5 },
      );
    });
    await vi.advanceTimersByTimeAsync(5);
    resume.open();
    const signal = await reads.promise;
    expect(signal.aborted).toBe(true);
    expect((signal.reason as DeferError).code).toBe('ERR_DEFER_TIMEOUT');
  });
});

describe('drain()', () => {
  it('resolves at once to zeros when nothing is pending', async () => {
    await drain();
    await expect(drain()).resolves.toEqual({ completed: 0, failed: 0, abandoned: 0 });
  });

  it('counts what settled during the call: completed, failed (threw, rejected, refused)', async () => {
    configureDefer({ maxQueued: 0, concurrency: 1 });
    const hold = gate();
    await withDefer(
      () => {
        defer(() => hold.promise);
        defer(() => undefined); // refused: no queue place
      },
      { mode: 'parallel' },
    );
    const waiting = drain();
    configureDefer({ maxQueued: undefined });
    await withDefer(() => {
      defer(() => Promise.reject(new Error('nope')));
      defer(() => undefined);
    });
    hold.open();
    // The refusal happened before this drain() started: it counts nowhere here.
    await expect(waiting).resolves.toEqual({ completed: 2, failed: 1, abandoned: 0 });
  });

  it('waits for work that appears while it waits, and for waitUntil promises', async () => {
    const order: string[] = [];
    const slow = gate();
    waitUntil(slow.promise.then(() => order.push('waitUntil')));
    await withDefer(() => {
      defer(async () => {
        await tick();
        order.push('first');
        setImmediate(() => {
          void withDefer(() => void defer(() => void order.push('appeared later')));
          slow.open();
        });
      });
    });
    const summary = await drain();
    expect(order[0]).toBe('first');
    expect(order.slice(1).sort()).toEqual(['appeared later', 'waitUntil']);
    expect(summary).toEqual({ completed: 3, failed: 0, abandoned: 0 });
  });

  it('ignores the scope it is called from', async () => {
    const ran: string[] = [];
    await withDefer(
      async () => {
        defer(() => void ran.push('own'));
        await drain();
        expect(ran).toEqual([]);
      },
      { await: true },
    );
    expect(ran).toEqual(['own']);
  });

  it('at its deadline abandons running, queued and still-open work, each reported once', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    configureDefer({ concurrency: 1 });
    let runningSignal: AbortSignal | undefined;
    const started: string[] = [];
    const fnGate = gate();
    await withDefer(
      () => {
        defer(
          async (ctx) => {
            started.push('running');
            runningSignal = ctx.signal;
            await new Promise(() => undefined);
          },
          { name: 'running' },
        );
        defer(() => void started.push('queued'), { name: 'queued' });
      },
      { mode: 'parallel' },
    );
    // A scope whose fn has not settled still holds its callbacks.
    const open = withDefer(async () => {
      defer(() => void started.push('open'), { name: 'in-open-scope' });
      await fnGate.promise;
    });
    waitUntil(new Promise(() => undefined));
    const summary = drain({ timeout: 1000 });
    await vi.advanceTimersByTimeAsync(1000);
    await expect(summary).resolves.toEqual({ completed: 0, failed: 0, abandoned: 4 });
    expect(started).toEqual(['running']);
    expect(runningSignal!.aborted).toBe(true);
    expect((runningSignal!.reason as DeferError).code).toBe('ERR_DEFER_ABANDONED');
    const abandoned = reported.filter(([, info]) => info.phase === 'abandoned');
    expect(abandoned.map(([, info]) => info.name).sort((a, b) => String(a).localeCompare(String(b)))).toEqual([
      'in-open-scope',
      'queued',
      'running',
      undefined,
    ]);
    for (const [error] of abandoned) expect((error as DeferError).code).toBe('ERR_DEFER_ABANDONED');
    expect(deferStats()).toMatchObject({ queued: 0, running: 0 });
    // drain() stops nothing: the open scope finishes later and new work runs normally.
    fnGate.open();
    await open;
    await withDefer(() => void defer(() => void started.push('after')), { await: true });
    expect(started).toEqual(['running', 'after']);
  });

  it.each([
    ['a waitUntil() promise', () => waitUntil(new Promise(() => undefined))],
    [
      'a callback held by a still-open scope',
      () => {
        const fnGate = gate();
        void withDefer(async () => {
          defer(() => undefined, { name: 'held' });
          await fnGate.promise;
        });
        return fnGate.open;
      },
    ],
  ])('counts %s it abandoned when nothing was running (the summary is built after the count)', async (_label, pend) => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const release = pend();
    const summary = drain({ timeout: 100 });
    await vi.advanceTimersByTimeAsync(100);
    await expect(summary).resolves.toEqual({ completed: 0, failed: 0, abandoned: 1 });
    expect(reported.map(([, info]) => info.phase)).toEqual(['abandoned']);
    release?.();
  });

  it("at its deadline leaves the calling scope's own waitUntil() promises alone", async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const other = gate();
    waitUntil(other.promise); // outside the scope: abandoned at the deadline
    let summary: unknown;
    await withDefer(async () => {
      const own = gate();
      waitUntil(own.promise);
      const pending = drain({ timeout: 100 });
      await vi.advanceTimersByTimeAsync(100);
      summary = await pending;
      own.open();
    });
    expect(summary).toEqual({ completed: 0, failed: 0, abandoned: 1 });
    expect(reported.map(([, info]) => [info.phase, info.name])).toEqual([['abandoned', undefined]]);
    other.open();
  });

  it('validates its options', () => {
    expect(() => drain({ timeout: -5 })).toThrow(expect.objectContaining({ code: 'ERR_DEFER_INVALID_OPTIONS' }));
    expect(() => drain({ timout: 5 } as never)).toThrow(/timout/);
  });
});

describe('scopes still open', () => {
  it('drain() waits for a withDefer whose fn has not settled', async () => {
    const fnGate = gate();
    const ran: string[] = [];
    const scope = withDefer(async () => {
      defer(() => void ran.push('cb'));
      expect(currentCollection()!.size).toBe(1);
      await fnGate.promise;
    });
    let drained = false;
    const waiting = drain().then(() => (drained = true));
    await tick();
    expect(drained).toBe(false);
    fnGate.open();
    await scope;
    await waiting;
    expect(ran).toEqual(['cb']);
  });
});

describe("the 'beforeExit' listener", () => {
  it('is present while work is pending and gone once drain() finds the process idle', async () => {
    await drain();
    const before = process.listenerCount('beforeExit');
    const g = gate();
    await withDefer(() => void defer(() => g.promise));
    expect(process.listenerCount('beforeExit')).toBe(before + 1);
    g.open();
    await drain();
    expect(process.listenerCount('beforeExit')).toBe(before);
  });
});
