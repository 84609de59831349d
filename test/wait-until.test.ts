/** waitUntil(): tracking work that already started. */
import { afterEach, describe, expect, it } from 'vitest';
import { configureDefer, deferStats, drain, waitUntil, withDefer, type DeferErrorInfo } from '../src/index.js';
import { gate } from './support/client.js';

afterEach(async () => {
  configureDefer({ onError: undefined, concurrency: undefined });
  await drain();
});

describe('waitUntil()', () => {
  it('returns undefined, works outside a scope, and drain() waits for it', async () => {
    const g = gate();
    let done = false;
    expect(waitUntil(g.promise.then(() => (done = true)))).toBeUndefined();
    const summary = drain();
    g.open();
    await expect(summary).resolves.toEqual({ completed: 1, failed: 0, abandoned: 0 });
    expect(done).toBe(true);
  });

  it("reports a rejection like a callback's, to the scope's onError", async () => {
    const errors: [unknown, DeferErrorInfo][] = [];
    const reason = new Error('ping failed');
    const g = gate();
    await withDefer(
      () => {
        waitUntil(g.promise.then(() => Promise.reject(reason)));
      },
      { onError: (error, info) => errors.push([error, info]) },
    );
    const summary = drain();
    g.open();
    await expect(summary).resolves.toEqual({ completed: 0, failed: 1, abandoned: 0 });
    expect(errors).toHaveLength(1);
    expect(errors[0]![0]).toBe(reason);
    expect(errors[0]![1]).toMatchObject({ phase: 'callback', name: undefined });
  });

  it('a thenable whose then getter throws is reported as a rejection, never thrown into the caller', async () => {
    const errors: unknown[] = [];
    const boom = new Error('then getter');
    const evil = {
      get then(): never {
        throw boom;
      },
    };
    const failedBefore = deferStats().failed;
    await withDefer(
      () => {
        expect(waitUntil(evil as unknown as PromiseLike<unknown>)).toBeUndefined();
      },
      { onError: (error) => void errors.push(error) },
    );
    await drain();
    expect(errors).toEqual([boom]);
    expect(deferStats().failed - failedBefore).toBe(1);
  });

  it('accepts a thenable and takes no scheduler slot', async () => {
    configureDefer({ concurrency: 1 });
    const g = gate();
    const thenable = { then: (ok: (v: unknown) => void, fail: (e: unknown) => void) => g.promise.then(ok, fail) };
    waitUntil(thenable as never);
    waitUntil(thenable as never);
    expect(deferStats()).toMatchObject({ running: 0, queued: 0 });
    g.open();
    await expect(drain()).resolves.toMatchObject({ completed: 2 });
  });

  it.each([[undefined], [42], ['promise'], [{}], [() => undefined]])('refuses %o with ERR_DEFER_INVALID_CALLBACK', (value) => {
    expect(() => waitUntil(value as never)).toThrow(expect.objectContaining({ code: 'ERR_DEFER_INVALID_CALLBACK' }));
    expect(() => waitUntil(value as never)).toThrow(/waitUntil\(\)/);
  });

  it('never delays a withDefer scope', async () => {
    const g = gate();
    await withDefer(() => {
      waitUntil(g.promise);
    });
    g.open();
    await drain();
  });
});
