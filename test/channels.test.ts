/** Semantic 10: diagnostics_channel tracing, scope and skip channels. */
import { AsyncLocalStorage } from 'node:async_hooks';
import dc from 'node:diagnostics_channel';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { defer, DeferError, drain, withDefer, type Outcome } from '../src/index.js';
import { withoutDefer } from '../src/testing.js';
import { gate } from './support/client.js';

type Event = [string, Record<string, unknown>];
let events: Event[] = [];
const handlers = {
  start: (m: unknown) => void events.push(['start', { ...(m as object) }]),
  end: (m: unknown) => void events.push(['end', { ...(m as object) }]),
  asyncStart: (m: unknown) => void events.push(['asyncStart', { ...(m as object) }]),
  asyncEnd: (m: unknown) => void events.push(['asyncEnd', { ...(m as object) }]),
  error: (m: unknown) => void events.push(['error', { ...(m as object) }]),
};
const onScope = (m: unknown) => void events.push(['scope', m as Record<string, unknown>]);
const onSkip = (m: unknown) => void events.push(['skip', m as Record<string, unknown>]);

beforeEach(() => {
  events = [];
  dc.tracingChannel('request-defer:callback').subscribe(handlers);
  dc.subscribe('request-defer:scope', onScope);
  dc.subscribe('request-defer:skip', onSkip);
});

afterEach(async () => {
  dc.tracingChannel('request-defer:callback').unsubscribe(handlers);
  dc.unsubscribe('request-defer:scope', onScope);
  dc.unsubscribe('request-defer:skip', onSkip);
  vi.useRealTimers();
  await drain();
});

const OK: Outcome = { kind: 'scope', ok: true, aborted: false };

describe('request-defer:callback (TracingChannel)', () => {
  it('traces a sync callback with start and end, an async one with asyncStart and asyncEnd', async () => {
    await withDefer(
      () => {
        defer(() => undefined, { name: 'sync' });
        defer(async () => undefined, { name: 'async' });
      },
      { await: true },
    );
    const kinds = events.filter(([kind]) => kind !== 'scope').map(([kind, m]) => `${kind}:${String(m.name)}`);
    expect(kinds).toEqual(['start:sync', 'end:sync', 'start:async', 'end:async', 'asyncStart:async', 'asyncEnd:async']);
    const start = events.find(([kind]) => kind === 'start')![1];
    expect(start).toMatchObject({ name: 'sync', outcome: OK, generation: 0 });
    expect(typeof start.startedAt).toBe('number');
  });

  it('publishes error for a throw and for a rejection', async () => {
    const boom = new Error('boom');
    await withDefer(
      () => {
        defer(() => {
          throw boom;
        }, { name: 'throws' });
        defer(() => Promise.reject(boom), { name: 'rejects' });
      },
      { await: true, onError: () => undefined },
    );
    const errors = events.filter(([kind]) => kind === 'error');
    expect(errors.map(([, m]) => [m.name, m.error])).toEqual([
      ['throws', boom],
      ['rejects', boom],
    ]);
  });

  it("publishes every event in the stores start's subscribers bound, as Node's traceSync and tracePromise do", async () => {
    // An OpenTelemetry-style subscriber: bindStore on start, the active span read back in later events.
    const channel = dc.tracingChannel('request-defer:callback');
    const span = new AsyncLocalStorage<string>();
    channel.start.bindStore(span, (m) => `span:${(m as { name: string }).name}`);
    const seen: string[] = [];
    const on = (kind: string) => (m: unknown) => void seen.push(`${kind} ${(m as { name: string }).name} in ${span.getStore()}`);
    const spanHandlers = { start: on('start'), end: on('end'), asyncStart: on('asyncStart'), asyncEnd: on('asyncEnd'), error: on('error') };
    channel.subscribe(spanHandlers);
    const inside: (string | undefined)[] = [];
    try {
      // Node's own shapes, for reference.
      try {
        channel.traceSync(
          () => {
            throw new Error('x');
          },
          { name: 'node-sync' },
        );
      } catch {
        // traceSync rethrows what fn threw
      }
      await channel.tracePromise(async () => Promise.reject(new Error('y')), { name: 'node-async' }).catch(() => undefined);
      const node = seen.splice(0);
      await withDefer(
        () => {
          defer(
            () => {
              inside.push(span.getStore());
              throw new Error('x');
            },
            { name: 'sync' },
          );
          defer(
            async () => {
              await null;
              inside.push(span.getStore());
              throw new Error('y');
            },
            { name: 'async' },
          );
        },
        { await: true, onError: () => undefined },
      );
      expect(seen).toEqual(node.map((line) => line.replaceAll('node-', '')));
      expect(inside).toEqual(['span:sync', 'span:async']);
    } finally {
      channel.unsubscribe(spanHandlers);
      channel.start.unbindStore(span);
    }
  });

  it('ends a timed-out callback with an error event carrying the DeferError', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    await withDefer(() => void defer(() => new Promise(() => undefined), { name: 'hangs', timeout: 10 }), {
      onError: () => undefined,
    });
    await vi.advanceTimersByTimeAsync(10);
    const error = events.find(([kind]) => kind === 'error')![1];
    expect(error.name).toBe('hangs');
    expect(error.error).toBeInstanceOf(DeferError);
    expect((error.error as DeferError).code).toBe('ERR_DEFER_TIMEOUT');
    expect(events.at(-1)![0]).toBe('asyncEnd');
  });

  it('traces nested, late and withoutDefer runs too', async () => {
    const registered = gate();
    await withDefer(
      () => {
        defer(() => {
          defer(() => undefined, { name: 'nested' });
          setImmediate(() => {
            defer(() => undefined, { name: 'late' });
            registered.open();
          });
        }, { name: 'outer' });
      },
      { await: true },
    );
    await registered.promise;
    await drain();
    const restore = withoutDefer();
    try {
      defer(() => undefined, { name: 'inline' });
    } finally {
      restore();
    }
    const started = events.filter(([kind]) => kind === 'start').map(([, m]) => [m.name, m.generation]);
    expect(started).toEqual([
      ['outer', 0],
      ['nested', 1],
      ['late', 1],
      ['inline', 0],
    ]);
  });
});

describe('request-defer:scope and request-defer:skip', () => {
  it('publish the decided outcome with its size, and each skipped callback with its reason', async () => {
    await expect(
      withDefer(() => {
        defer(() => undefined, { name: 'skipped' });
        defer(() => undefined, { name: 'kept' }).always();
        throw new Error('fn failed');
      }),
    ).rejects.toThrow('fn failed');
    await drain();
    const scope = events.find(([kind]) => kind === 'scope')![1];
    expect(scope.size).toBe(2);
    expect(scope.outcome).toMatchObject({ kind: 'scope', ok: false, aborted: false });
    const skips = events.filter(([kind]) => kind === 'skip').map(([, m]) => [m.name, m.reason]);
    expect(skips).toEqual([['skipped', 'status']]);
  });
});
