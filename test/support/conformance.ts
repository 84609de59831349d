/**
 * The conformance suite: SPEC semantics 1–7, 9 and 11 as they must hold on
 * every adapter. Each adapter's test file calls `conformance(harness)`; a new
 * adapter gets the whole suite by adding a harness.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import dc from 'node:diagnostics_channel';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { currentCollection, defer, drain, forget, type DeferErrorInfo, type Outcome } from '../../src/index.js';
import type { Harness, ListenExtra, RouteSpec, Running } from './adapters.js';
import { abortedGet, gate, get } from './client.js';

type Mw = Parameters<Harness['listen']>[1];

/**
 * Registers one plain and one `always` callback in the current scope and
 * records which ran, and the outcome the `always` one saw.
 */
function normalAndAlways(): { ran: string[]; seen: () => Outcome | undefined; register: () => void } {
  const ran: string[] = [];
  let seen: Outcome | undefined;
  return {
    ran,
    seen: () => seen,
    register: () => {
      defer(() => ran.push('normal'));
      defer((ctx) => {
        ran.push('always');
        seen = ctx.outcome;
      }).always();
    },
  };
}

export function conformance(h: Harness): void {
  describe(`${h.name}: conformance`, () => {
    let running: Running | undefined;
    const cleanups: (() => void)[] = [];

    afterEach(async () => {
      for (const cleanup of cleanups.splice(0)) cleanup();
      await running?.close();
      running = undefined;
      await drain();
    });

    async function serve(routes: Record<string, RouteSpec>, options?: Mw, extra?: ListenExtra): Promise<number> {
      running = await h.listen(routes, options, extra);
      return running.port;
    }

    function subscribeSkips(): { name: string; reason: string }[] {
      const skips: { name: string; reason: string }[] = [];
      const onSkip = (message: unknown) => {
        const m = message as { name: string; reason: string };
        skips.push({ name: m.name, reason: m.reason });
      };
      dc.subscribe('request-defer:skip', onSkip);
      cleanups.push(() => dc.unsubscribe('request-defer:skip', onSkip));
      return skips;
    }

    describe('1. after the response', () => {
      it('the client gets the whole response while a deferred callback is still running', async () => {
        const release = gate();
        const events: string[] = [];
        const port = await serve({
          '/ok': {
            run: () =>
              defer(async () => {
                events.push('start');
                await release.promise;
                events.push('end');
              }),
          },
        });
        const reply = await get(port, '/ok');
        expect(reply).toEqual({ status: 200, body: 'ok' });
        expect(events).not.toContain('end');
        release.open();
        await drain();
        expect(events).toEqual(['start', 'end']);
      });

      it('never starts a callback while a streamed response is still being written', async () => {
        const hold = gate();
        const started: string[] = [];
        const port = await serve({
          '/stream': { run: () => defer(() => started.push('cb')), holdAfterHeaders: hold.promise, chunks: ['a', 'b'] },
        });
        const body = await new Promise<string>((resolve, reject) => {
          const req = httpRequest({ host: '127.0.0.1', port, path: '/stream', agent: false }, (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => {
              if (text === '') {
                // Headers and the first chunk are out; the response has not finished.
                expect(started).toEqual([]);
                hold.open();
              }
              text += chunk;
            });
            res.on('end', () => resolve(text));
          });
          req.on('error', reject);
          req.end();
        });
        await drain();
        expect(body).toBe('firstabok');
        expect(started).toEqual(['cb']);
      });
    });

    describe('2. status condition', () => {
      async function outcomesFor(status: number, options?: Mw) {
        const probe = normalAndAlways();
        const port = await serve(
          {
            '/r': {
              status,
              run: () => {
                probe.register();
              },
            },
          },
          options,
        );
        const reply = await get(port, '/r');
        await drain();
        return { ran: probe.ran, seen: probe.seen(), reply };
      }

      it.each([200, 201, 204, 302, 399])('status %i runs every callback', async (status) => {
        const { ran, seen } = await outcomesFor(status);
        expect(ran).toEqual(['normal', 'always']);
        expect(seen).toEqual({ kind: 'http', statusCode: status, ok: true, aborted: false });
      });

      it.each([400, 404, 422, 500, 503])('status %i runs only always callbacks, and reports the skip', async (status) => {
        const skips = subscribeSkips();
        const { ran, seen } = await outcomesFor(status);
        expect(ran).toEqual(['always']);
        expect(seen).toEqual({ kind: 'http', statusCode: status, ok: false, aborted: false });
        expect(skips).toHaveLength(1);
        expect(skips[0]!.reason).toBe('status');
      });

      it('runWhen replaces the default rule', async () => {
        const skips = subscribeSkips();
        const runWhen = vi.fn((o: Outcome) => o.statusCode === 404);
        const failed = await outcomesFor(404, { runWhen });
        expect(failed.ran).toEqual(['normal', 'always']);
        await running!.close();
        running = undefined;
        const passed = await outcomesFor(200, { runWhen });
        expect(passed.ran).toEqual(['always']);
        expect(skips.map((s) => s.reason)).toEqual(['runWhen']);
        expect(runWhen).toHaveBeenCalledTimes(2);
      });

      it('a runWhen that throws counts as false and is reported once', async () => {
        const errors: [unknown, DeferErrorInfo][] = [];
        const boom = new Error('runWhen broke');
        const { ran } = await outcomesFor(200, {
          runWhen: () => {
            throw boom;
          },
          onError: (error, info) => errors.push([error, info]),
        });
        expect(ran).toEqual(['always']);
        expect(errors).toHaveLength(1);
        expect(errors[0]![0]).toBe(boom);
        expect(errors[0]![1].phase).toBe('callback');
      });

      const failures: [string, RouteSpec['fail'], number | undefined, number][] = [
        ['a synchronous throw', 'throw', undefined, 500],
        ['a synchronous throw with err.status', 'throw', 422, 422],
        ['next(err)', 'next', 422, 422],
        ['next(err) without status', 'next', undefined, 500],
        ['a rejected promise', 'reject', undefined, 500],
        ['a rejected promise with err.status', 'reject', 409, 409],
      ];
      for (const [label, fail, failStatus, expected] of failures) {
        if (!h.features.has(fail!)) continue;
        it(`${label} is seen with the status the framework sent (${expected})`, async () => {
          const probe = normalAndAlways();
          const port = await serve({
            '/fail': {
              fail,
              failStatus,
              run: () => {
                probe.register();
              },
            },
          });
          const reply = await get(port, '/fail');
          await drain();
          expect(reply.status).toBe(expected);
          expect(probe.ran).toEqual(['always']);
          expect(probe.seen()).toEqual({ kind: 'http', statusCode: expected, ok: false, aborted: false });
        });
      }
    });

    describe('3. abort', () => {
      it('a client gone before any response: aborted, no statusCode, only always callbacks, runWhen not consulted', async () => {
        const skips = subscribeSkips();
        const ready = gate();
        const never = gate();
        cleanups.push(() => never.open());
        const probe = normalAndAlways();
        const runWhen = vi.fn(() => true);
        const port = await serve(
          {
            '/slow': {
              run: () => {
                probe.register();
                ready.open();
              },
              hold: never.promise,
            },
          },
          { runWhen },
        );
        await abortedGet(port, '/slow', { ready: ready.promise });
        await drain();
        expect(probe.ran).toEqual(['always']);
        expect(probe.seen()).toEqual({ kind: 'http', ok: false, aborted: true });
        expect(runWhen).not.toHaveBeenCalled();
        expect(skips).toEqual([{ name: expect.stringMatching(/#\d+$/), reason: 'aborted' }]);
      });

      it('a client gone after the headers (SSE, long poll): aborted with the status sent', async () => {
        const never = gate();
        cleanups.push(() => never.open());
        const probe = normalAndAlways();
        const port = await serve({
          '/sse': {
            run: () => {
              probe.register();
            },
            holdAfterHeaders: never.promise,
          },
        });
        await abortedGet(port, '/sse', 'after-headers');
        await drain();
        expect(probe.ran).toEqual(['always']);
        expect(probe.seen()).toEqual({ kind: 'http', statusCode: 200, ok: false, aborted: true });
      });

      it('a defer() made after the client left, then a 201, is judged by the abort, not by the late status', async () => {
        // The handler awaited its database while the client gave up; only then does it defer and respond.
        const ready = gate();
        const registered = gate();
        const probe = normalAndAlways();
        const port = await serve({ '/late': { untilClosed: () => ready.open(), run: () => (probe.register(), registered.open()), status: 201 } });
        await abortedGet(port, '/late', { ready: ready.promise });
        await registered.promise;
        const summary = await drain({ timeout: 5_000 }); // the deadline only fires if the scope never settles
        expect(summary.abandoned).toBe(0);
        expect(probe.ran).toEqual(['always']);
        expect(probe.seen()).toEqual({ kind: 'http', ok: false, aborted: true });
      });

      it('an adapter mounted behind an async middleware the client outlasted opens an aborted scope', async () => {
        // e.g. a session lookup before the defer middleware; the client left during it.
        const ready = gate();
        const registered = gate();
        const probe = normalAndAlways();
        const port = await serve(
          { '/after-session': { run: () => (probe.register(), registered.open()) } },
          undefined,
          { lateMount: () => ready.open() },
        );
        await abortedGet(port, '/after-session', { ready: ready.promise });
        await registered.promise;
        const summary = await drain({ timeout: 5_000 });
        expect(summary.abandoned).toBe(0);
        expect(probe.ran).toEqual(['always']);
        expect(probe.seen()).toEqual({ kind: 'http', ok: false, aborted: true });
      });

      it('a pipelined response still queued when the connection dies is aborted, and drain() does not wait on it', async () => {
        const never = gate();
        cleanups.push(() => never.open());
        const first = normalAndAlways();
        const second = normalAndAlways();
        const queued = gate();
        const port = await serve({
          '/1': { run: () => first.register(), holdAfterHeaders: never.promise },
          '/2': { run: () => (second.register(), queued.open()) },
        });
        const socket = connect(port, '127.0.0.1');
        socket.on('error', () => undefined);
        socket.write('GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n');
        await queued.promise; // /2 answered, its response queued behind /1's
        const headers = gate();
        socket.once('data', () => headers.open());
        await headers.promise;
        socket.destroy();
        const summary = await drain({ timeout: 5_000 }); // the deadline only fires if a scope never settles
        expect(summary.abandoned).toBe(0);
        expect([first.ran, second.ran]).toEqual([['always'], ['always']]);
        expect(first.seen()).toEqual({ kind: 'http', statusCode: 200, ok: false, aborted: true });
        expect(second.seen()).toMatchObject({ kind: 'http', ok: false, aborted: true });
      });

      it('a response the server destroys is aborted', async () => {
        const probe = normalAndAlways();
        const port = await serve({
          '/destroy': {
            run: () => {
              probe.register();
            },
            destroyAfterHeaders: true,
          },
        });
        await get(port, '/destroy').catch(() => undefined);
        await drain();
        expect(probe.ran).toEqual(['always']);
        expect(probe.seen()).toMatchObject({ kind: 'http', ok: false, aborted: true });
      });
    });

    describe('4. order and isolation', () => {
      it('sequential (default): registration order, one after another', async () => {
        const events: string[] = [];
        const step = (n: number) => async () => {
          events.push(`start ${n}`);
          for (let i = 0; i < 4 - n; i++) await new Promise((resolve) => setImmediate(resolve));
          events.push(`end ${n}`);
        };
        const port = await serve({ '/seq': { run: () => [1, 2, 3].forEach((n) => defer(step(n))) } });
        await get(port, '/seq');
        await drain();
        expect(events).toEqual(['start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3']);
      });

      it("mode 'parallel': all start at once", async () => {
        const events: string[] = [];
        const release = gate();
        const port = await serve(
          {
            '/par': {
              run: () =>
                [1, 2, 3].forEach((n) =>
                  defer(async () => {
                    events.push(`start ${n}`);
                    await release.promise;
                    events.push(`end ${n}`);
                  }),
                ),
            },
          },
          { mode: 'parallel' },
        );
        await get(port, '/par');
        const drained = drain();
        await vi.waitUntil(() => events.length === 3);
        expect(events).toEqual(['start 1', 'start 2', 'start 3']);
        release.open();
        await drained;
        expect(events.slice(3).sort()).toEqual(['end 1', 'end 2', 'end 3']);
      });

      it('a throw, a rejection and a non-Error throw are each reported once and stop nothing', async () => {
        const unhandled = vi.fn();
        process.on('unhandledRejection', unhandled);
        cleanups.push(() => process.off('unhandledRejection', unhandled));
        const errors: [unknown, DeferErrorInfo][] = [];
        const boom = new Error('sync boom');
        const rejected = new TypeError('async boom');
        const ran: string[] = [];
        const port = await serve(
          {
            '/faults': {
              run: () => {
                defer(
                  () => {
                    throw boom;
                  },
                  { name: 'sync-throw' },
                );
                defer(() => ran.push('a'));
                defer(() => Promise.reject(rejected), { name: 'rejects' });
                defer(() => ran.push('b'));
                defer(
                  () => {
                    throw 'a string';
                  },
                  { name: 'non-error' },
                );
                defer(() => ran.push('c'));
              },
            },
          },
          { onError: (error, info) => errors.push([error, info]) },
        );
        const reply = await get(port, '/faults');
        await drain();
        expect(reply).toEqual({ status: 200, body: 'ok' });
        expect(ran).toEqual(['a', 'b', 'c']);
        expect(errors.map(([e]) => e)).toEqual([boom, rejected, 'a string']);
        expect(errors.map(([, info]) => info.name)).toEqual(['sync-throw', 'rejects', 'non-error']);
        for (const [, info] of errors) {
          expect(Object.keys(info).sort()).toEqual(['name', 'outcome', 'phase']);
          expect(info.phase).toBe('callback');
          expect(JSON.parse(JSON.stringify(info))).toEqual(info);
        }
        expect(unhandled).not.toHaveBeenCalled();
      });

      it('200 concurrent requests awaiting at different points each see only their own callbacks', async () => {
        const seen = new Map<string, string[]>();
        const mismatches: string[] = [];
        const port = await serve({
          '/i': {
            run: async ({ url }) => {
              const id = new URL(url, 'http://x').searchParams.get('id')!;
              const n = Number(id);
              for (let k = 0; k < 3; k++) {
                for (let t = 0; t < (n * 7 + k) % 5; t++) await new Promise((resolve) => setImmediate(resolve));
                defer(() => void (seen.get(id) ?? seen.set(id, []).get(id)!).push(`${id}:${k}`), { name: `${id}:${k}` });
                const names = [...(currentCollection() ?? [])].map((cb) => cb.name);
                if (names.some((name) => !name.startsWith(`${id}:`)) || names.length !== k + 1) mismatches.push(`${id}: ${names.join(',')}`);
              }
            },
          },
        });
        const ids = Array.from({ length: 200 }, (_, i) => String(i));
        const replies = await Promise.all(ids.map((id) => get(port, `/i?id=${id}`)));
        await drain();
        expect(replies.every((r) => r.status === 200)).toBe(true);
        expect(mismatches).toEqual([]);
        for (const id of ids) expect(seen.get(id)).toEqual([`${id}:0`, `${id}:1`, `${id}:2`]);
      });
    });

    describe('5. names', () => {
      it('a same-name registration replaces the waiting one and runs where it was registered', async () => {
        const ran: string[] = [];
        const port = await serve({
          '/names': {
            run: () => {
              defer(() => ran.push('first x'), { name: 'x' });
              defer(() => ran.push('y'));
              defer(() => ran.push('second x'), { name: 'x' });
              expect(currentCollection()!.size).toBe(2);
            },
          },
        });
        await get(port, '/names');
        await drain();
        expect(ran).toEqual(['y', 'second x']);
      });

      it('forget(name) removes a waiting callback; unknown names return false', async () => {
        const ran: string[] = [];
        const results: boolean[] = [];
        const port = await serve({
          '/forget': {
            run: () => {
              defer(() => ran.push('mail'), { name: 'mail' });
              defer(() => ran.push('audit'), { name: 'audit' });
              results.push(forget('mail'), forget('mail'), forget('nope'));
            },
          },
        });
        await get(port, '/forget');
        await drain();
        expect(results).toEqual([true, false, false]);
        expect(ran).toEqual(['audit']);
      });
    });

    describe('6. nested and late defer', () => {
      it('a defer() inside a running callback joins the invocation after those waiting', async () => {
        const ran: string[] = [];
        const port = await serve({
          '/nested': {
            run: () => {
              defer(() => {
                ran.push('a');
                defer(() => ran.push('nested'));
              });
              defer(() => ran.push('b'));
            },
          },
        });
        await get(port, '/nested');
        await drain();
        expect(ran).toEqual(['a', 'b', 'nested']);
      });

      it('a nested defer() in a failed scope is skipped unless always', async () => {
        const ran: string[] = [];
        const port = await serve({
          '/nested-fail': {
            status: 500,
            run: () => {
              defer(() => {
                ran.push('always');
                defer(() => ran.push('nested normal'));
                defer(() => ran.push('nested always')).always();
              }).always();
            },
          },
        });
        await get(port, '/nested-fail');
        await drain();
        expect(ran).toEqual(['always', 'nested always']);
      });

      it('a defer() after the invocation completed is judged by the outcome', async () => {
        const ran: string[] = [];
        const registered = gate();
        const port = await serve({
          '/late': {
            run: () => {
              defer(() => {
                ran.push('first');
                setImmediate(() => {
                  defer(() => ran.push('late'));
                  registered.open();
                });
              });
            },
          },
        });
        await get(port, '/late');
        await registered.promise;
        await drain();
        expect(ran).toEqual(['first', 'late']);
      });
    });

    describe('9. drain', () => {
      it('waits for callbacks of a response that has not finished yet', async () => {
        const hold = gate();
        const ready = gate();
        const ran: string[] = [];
        const port = await serve({
          '/held': {
            run: () => {
              defer(() => ran.push('cb'));
              ready.open();
            },
            hold: hold.promise,
          },
        });
        const reply = get(port, '/held');
        await ready.promise;
        let drained = false;
        const waiting = drain().then((summary) => {
          drained = true;
          return summary;
        });
        await new Promise((resolve) => setImmediate(resolve));
        expect(drained).toBe(false);
        hold.open();
        await reply;
        expect(await waiting).toEqual({ completed: 1, failed: 0, abandoned: 0 });
        expect(ran).toEqual(['cb']);
      });
    });

    describe('11. async context', () => {
      it('a callback sees the AsyncLocalStorage stores visible at its defer() call', async () => {
        const requestId = new AsyncLocalStorage<string>();
        const seen: (string | undefined)[] = [];
        const port = await serve({
          '/ctx': {
            run: ({ url }) =>
              requestId.run(url, async () => {
                await new Promise((resolve) => setImmediate(resolve));
                defer(async () => {
                  seen.push(requestId.getStore());
                  await null;
                  seen.push(requestId.getStore());
                });
              }),
          },
        });
        await Promise.all([get(port, '/ctx?a'), get(port, '/ctx?b')]);
        await drain();
        expect(seen.sort()).toEqual(['/ctx?a', '/ctx?a', '/ctx?b', '/ctx?b']);
      });
    });

    describe('one scope per response', () => {
      it.each([
        ['', { twice: true }],
        [', even when the async context was lost between the two', { twice: true, lostContext: true }],
      ] as const)('a second adapter on the same response reuses the scope and ignores its options%s', async (_label, extra) => {
        const events: string[] = [];
        const port = await serve(
          {
            '/twice': {
              run: () =>
                [1, 2].forEach((n) =>
                  defer(async () => {
                    events.push(`start ${n}`);
                    await new Promise((resolve) => setImmediate(resolve));
                    events.push(`end ${n}`);
                  }),
                ),
            },
          },
          undefined,
          extra,
        );
        await get(port, '/twice');
        await drain();
        expect(events).toEqual(['start 1', 'end 1', 'start 2', 'end 2']);
      });
    });
  });
}
