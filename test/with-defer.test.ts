/** withDefer(): scopes without HTTP (CLI commands, jobs, cron ticks, tests). */
import { afterEach, describe, expect, it } from 'vitest';
import { configureDefer, currentCollection, defer, deferStats, DeferError, drain, withDefer, type Outcome } from '../src/index.js';
import { gate } from './support/client.js';

afterEach(async () => {
  await drain();
});

describe('withDefer()', () => {
  it('resolves to fn’s value once callbacks are handed over, without awaiting them', async () => {
    const release = gate();
    const events: string[] = [];
    const value = await withDefer(async () => {
      defer(async () => {
        events.push('start');
        await release.promise;
        events.push('end');
      });
      return 42;
    });
    expect(value).toBe(42);
    expect(events).not.toContain('end');
    release.open();
    await drain();
    expect(events).toEqual(['start', 'end']);
  });

  it('with await: true settles only after every callback, nested ones included', async () => {
    const events: string[] = [];
    await withDefer(
      () => {
        defer(async () => {
          await new Promise((resolve) => setImmediate(resolve));
          events.push('a');
          defer(async () => {
            await new Promise((resolve) => setImmediate(resolve));
            events.push('nested');
          });
        });
      },
      { await: true },
    );
    expect(events).toEqual(['a', 'nested']);
  });

  it('rejects with exactly what fn threw, and decides a failed scope outcome', async () => {
    const thrown = { reason: 'not an Error' };
    const ran: string[] = [];
    let seen: Outcome | undefined;
    const result = withDefer(
      () => {
        defer(() => void ran.push('normal'));
        defer((ctx) => {
          ran.push('always');
          seen = ctx.outcome;
        }).always();
        throw thrown;
      },
      { await: true },
    );
    await expect(result).rejects.toBe(thrown);
    expect(ran).toEqual(['always']);
    expect(seen).toEqual({ kind: 'scope', ok: false, aborted: false, error: thrown });
  });

  it('an async fn that rejects fails the scope the same way', async () => {
    const ran: string[] = [];
    await expect(
      withDefer(async () => {
        defer(() => void ran.push('normal'));
        await null;
        throw new Error('late failure');
      }),
    ).rejects.toThrow('late failure');
    await drain();
    expect(ran).toEqual([]);
  });

  it('a callback failure never makes it reject', async () => {
    const errors: unknown[] = [];
    await expect(
      withDefer(
        () => {
          defer(() => {
            throw new Error('callback failed');
          });
          return 'fine';
        },
        { await: true, onError: (error) => errors.push(error) },
      ),
    ).resolves.toBe('fine');
    expect(errors).toHaveLength(1);
  });

  it('always opens a fresh scope, even inside another scope or a callback', async () => {
    const ran: string[] = [];
    await withDefer(
      async () => {
        const outer = currentCollection();
        defer(() => void ran.push('outer'));
        await withDefer(
          () => {
            expect(currentCollection()).not.toBe(outer);
            expect(currentCollection()!.size).toBe(0);
            defer(() => void ran.push('inner'));
          },
          { await: true },
        );
        expect(ran).toEqual(['inner']);
        expect(outer!.size).toBe(1);
      },
      { await: true },
    );
    expect(ran).toEqual(['inner', 'outer']);
  });

  it('runWhen decides for scope outcomes too', async () => {
    const ran: string[] = [];
    await withDefer(
      () => {
        defer(() => void ran.push('runs'));
      },
      { await: true, runWhen: () => false },
    );
    await expect(
      withDefer(
        () => {
          defer(() => void ran.push('runs on failure'));
          throw new Error('x');
        },
        { await: true, runWhen: (o) => !o.ok },
      ),
    ).rejects.toThrow('x');
    expect(ran).toEqual(['runs on failure']);
  });

  it('validates fn and options synchronously', () => {
    expect(() => withDefer('nope' as never)).toThrow(expect.objectContaining({ code: 'ERR_DEFER_INVALID_CALLBACK' }));
    expect(() => withDefer(() => undefined, { awiat: true } as never)).toThrow(DeferError);
    expect(() => withDefer(() => undefined, { await: 'yes' } as never)).toThrow(/await/);
    expect(() => withDefer(() => undefined, { mode: 'fast' } as never)).toThrow(
      expect.objectContaining({ code: 'ERR_DEFER_INVALID_OPTIONS' }),
    );
  });

  it("mode 'parallel' starts every callback at once", async () => {
    const release = gate();
    const started: number[] = [];
    const done = withDefer(
      () => {
        for (const n of [1, 2, 3]) {
          defer(async () => {
            started.push(n);
            await release.promise;
          });
        }
      },
      { mode: 'parallel', await: true },
    );
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).toEqual([1, 2, 3]);
    release.open();
    await done;
  });

  it('without await, settles once every callback is handed over, even when the invocation yields', async () => {
    configureDefer({ concurrency: 1 });
    const hold = gate();
    try {
      await withDefer(
        () => {
          for (let i = 0; i < 1500; i++) defer(() => hold.promise);
        },
        { mode: 'parallel' },
      );
      expect(deferStats()).toMatchObject({ running: 1, queued: 1499 });
    } finally {
      hold.open();
      await drain();
      configureDefer({ concurrency: undefined });
    }
  });
});
