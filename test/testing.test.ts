/**
 * request-defer/testing: fakeDefer() and withoutDefer(), as a test suite
 * uses them. Every behaviour of SPEC.md "Testing support" has a test here;
 * docs/testing.md shows the same examples.
 */
import { AssertionError } from 'node:assert';
import { AsyncLocalStorage } from 'node:async_hooks';
import dc from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import express from 'express5';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  configureDefer,
  defer,
  DeferError,
  DeferredCallback,
  drain,
  forget,
  waitUntil,
  withDefer,
  type DeferContext,
  type DeferErrorInfo,
  type Outcome,
} from '../src/index.js';
import { deferMiddleware } from '../src/express.js';
import { fakeDefer, withoutDefer, type FakeDefer } from '../src/testing.js';
import { gate } from './support/client.js';

const cleanups: (() => void)[] = [];

/** Installs a fake that is restored after the test, even when the test fails. */
function fake(): FakeDefer {
  const f = fakeDefer();
  cleanups.push(() => f.restore());
  return f;
}

/** Same for withoutDefer(). */
function inline(): () => void {
  const restore = withoutDefer();
  cleanups.push(restore);
  return restore;
}

function code(error: unknown): unknown {
  return (error as { code?: unknown }).code;
}

/** What a rejected promise rejected with. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the promise to reject');
}

/** What a function threw. */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected the function to throw');
}

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
  vi.useRealTimers();
  vi.restoreAllMocks();
  configureDefer({ onError: undefined, concurrency: undefined, maxQueued: undefined, maxNestingDepth: undefined });
  await drain();
  // No test may leave an override installed: defer() outside a scope throws again.
  expect(code(thrown(() => defer(() => {})))).toBe('ERR_DEFER_NO_SCOPE');
});

describe('fakeDefer(): recording', () => {
  it('records outside any scope, returns the DeferredCallback and runs nothing', async () => {
    const f = fake();
    const fn = vi.fn();
    const cb = defer(fn, { name: 'audit' });
    expect(cb).toBeInstanceOf(DeferredCallback);
    expect(f.callbacks).toEqual([cb]);
    expect(f.callbacks[0]).toBe(cb);
    await drain();
    expect(fn).not.toHaveBeenCalled();
  });

  it('records inside withDefer(): the scope ends and nothing runs', async () => {
    const f = fake();
    const fn = vi.fn();
    await withDefer(() => void defer(fn, { name: 'inside' }), { await: true });
    await drain();
    expect(fn).not.toHaveBeenCalled();
    f.assertDeferred('inside');
    expect(f.count).toBe(1);
  });

  it('records inside an Express 5 app with deferMiddleware; runAll runs in the request context', async () => {
    const f = fake();
    const requestId = new AsyncLocalStorage<string>();
    const seen: string[] = [];
    const app = express();
    app.use((req, res, next) => requestId.run('req-1', next));
    app.use(deferMiddleware());
    app.post('/signup', (req, res) => {
      defer(() => void seen.push(`mail for ${requestId.getStore()}`), { name: 'welcome-mail' });
      res.status(201).json({ ok: true });
    });
    const response = await request(app).post('/signup');
    expect(response.status).toBe(201);
    await drain();
    expect(seen).toEqual([]);
    f.assertDeferred('welcome-mail');
    await f.runAll({ statusCode: 201 });
    expect(seen).toEqual(['mail for req-1']);
  });

  it('exposes name, isAlways and the options given on each recorded callback', () => {
    const f = fake();
    function sendMail(): void {}
    const named = defer(() => {}, { name: 'audit-login', always: true, timeout: 5_000 });
    const anonymous = defer(sendMail);
    const chained = defer(() => {}).always();
    expect(f.callbacks.map((cb) => [cb.name, cb.isAlways, cb.options])).toEqual([
      ['audit-login', true, { name: 'audit-login', always: true, timeout: 5_000 }],
      [anonymous.name, false, {}],
      [chained.name, true, {}],
    ]);
    expect(named.name).toBe('audit-login');
    expect(anonymous.name).toMatch(/^sendMail#\d+$/);
    expect(chained.name).not.toBe(anonymous.name);
  });

  it('counts the recorded callbacks', () => {
    const f = fake();
    expect(f.count).toBe(0);
    defer(() => {});
    defer(() => {});
    expect(f.count).toBe(2);
  });

  it('still validates defer() arguments and records nothing for a call that throws', () => {
    const f = fake();
    expect(code(thrown(() => defer('mail' as never)))).toBe('ERR_DEFER_INVALID_CALLBACK');
    expect(code(thrown(() => defer(() => {}, { timout: 5 } as never)))).toBe('ERR_DEFER_INVALID_OPTIONS');
    expect(f.count).toBe(0);
  });

  it('a same name replaces the earlier record of the same scope; other scopes keep theirs', async () => {
    const f = fake();
    const first = defer(() => {}, { name: 'recompute' });
    defer(() => {}, { name: 'other' });
    const second = defer(() => {}, { name: 'recompute' });
    expect(f.callbacks).toEqual([expect.anything(), second]);
    expect(f.callbacks).not.toContain(first);
    expect(f.callbacks.map((cb) => cb.name)).toEqual(['other', 'recompute']);
    await Promise.all([
      withDefer(() => void defer(() => {}, { name: 'mail' })),
      withDefer(() => void defer(() => {}, { name: 'mail' })),
    ]);
    expect(f.callbacks.map((cb) => cb.name)).toEqual(['other', 'recompute', 'mail', 'mail']);
  });

  it('forget(name) removes the record of the current scope', async () => {
    const f = fake();
    const anonymous = defer(() => {});
    defer(() => {}, { name: 'welcome-mail' });
    expect(forget('welcome-mail')).toBe(true);
    expect(forget('welcome-mail')).toBe(false);
    expect(forget('never-deferred')).toBe(false);
    expect(forget(anonymous.name)).toBe(true);
    expect(f.count).toBe(0);
    await withDefer(() => {
      defer(() => {}, { name: 'cart' });
      defer(() => {}, { name: 'kept' });
      expect(forget('cart')).toBe(true);
    });
    // Outside that scope, as in production, forget() does not reach its callbacks.
    expect(forget('kept')).toBe(false);
    expect(f.callbacks.map((cb) => cb.name)).toEqual(['kept']);
  });

  it('waitUntil() is still tracked by drain()', async () => {
    fake();
    let release!: () => void;
    let settled = false;
    waitUntil(new Promise<void>((resolve) => (release = resolve)).then(() => void (settled = true)));
    let drained = false;
    const drainer = drain().then((summary) => {
      drained = true;
      return summary;
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(drained).toBe(false);
    release();
    expect(await drainer).toEqual({ completed: 1, failed: 0, abandoned: 0 });
    expect(settled).toBe(true);
  });

  it('run() and runAll() are not traced on request-defer:callback', async () => {
    const f = fake();
    const started = vi.fn();
    const channel = dc.tracingChannel('request-defer:callback');
    const handlers = { start: started, end() {}, asyncStart() {}, asyncEnd() {}, error() {} };
    channel.subscribe(handlers);
    cleanups.push(() => channel.unsubscribe(handlers));
    defer(() => {}, { name: 'a' });
    defer(() => {}, { name: 'b' });
    await f.run('a');
    await f.runAll();
    expect(started).not.toHaveBeenCalled();
  });
});

describe('fakeDefer(): run(name?)', () => {
  it('runs the callbacks with that name regardless of always and status, with a passing outcome, and removes them', async () => {
    const f = fake();
    const contexts: DeferContext[] = [];
    defer((context) => void contexts.push(context), { name: 'mail' });
    defer(() => {}, { name: 'audit' }).always();
    await f.run('mail');
    expect(contexts).toHaveLength(1);
    expect(contexts[0]!.name).toBe('mail');
    expect(contexts[0]!.outcome).toEqual({ kind: 'http', statusCode: 200, ok: true, aborted: false });
    expect(contexts[0]!.signal).toBeInstanceOf(AbortSignal);
    expect(contexts[0]!.signal.aborted).toBe(false);
    expect(f.callbacks.map((cb) => cb.name)).toEqual(['audit']);
  });

  it('runs every record with the same name (one per scope)', async () => {
    const f = fake();
    const order: string[] = [];
    await withDefer(() => void defer(() => void order.push('first'), { name: 'mail' }));
    defer(() => void order.push('other'));
    await withDefer(() => void defer(() => void order.push('second'), { name: 'mail' }));
    await f.run('mail');
    expect(order).toEqual(['first', 'second']);
    expect(f.count).toBe(1);
  });

  it('run() runs all in record order, always or not, and awaits each before the next', async () => {
    const f = fake();
    const order: string[] = [];
    defer(async () => {
      await Promise.resolve();
      order.push('slow first');
    });
    defer(() => void order.push('always')).always();
    defer(() => void order.push('last'));
    await f.run();
    expect(order).toEqual(['slow first', 'always', 'last']);
    expect(f.count).toBe(0);
  });

  it('rejects (never throws) with an AssertionError listing what was deferred for an unknown name', async () => {
    const f = fake();
    defer(() => {}, { name: 'audit-login', always: true });
    const ran = vi.fn();
    defer(ran);
    const promise = f.run('send-welcome-mail');
    expect(promise).toBeInstanceOf(Promise);
    const error = await rejection(promise);
    expect(error).toBeInstanceOf(AssertionError);
    expect(code(error)).toBe('ERR_ASSERTION');
    expect((error as Error).message).toBe(
      'fakeDefer().run("send-welcome-mail"): no deferred callback named "send-welcome-mail" is recorded; ' +
        'deferred were: "audit-login" (always), <anonymous>',
    );
    expect(ran).not.toHaveBeenCalled();
    expect(f.count).toBe(2);
    f.clear();
    expect(((await rejection(f.run('x'))) as Error).message).toBe(
      'fakeDefer().run("x"): no deferred callback named "x" is recorded; nothing was deferred',
    );
  });

  it('runs callbacks deferred meanwhile (nested defers) after the others, whatever their name', async () => {
    const f = fake();
    const order: string[] = [];
    defer(
      () => {
        order.push('a');
        defer(() => void order.push('nested in a'), { name: 'child' });
      },
      { name: 'a' },
    );
    defer(() => void order.push('b'), { name: 'b' });
    await f.run('a');
    expect(order).toEqual(['a', 'nested in a']);
    expect(f.callbacks.map((cb) => cb.name)).toEqual(['b']);
  });

  it("picks up only what its own callbacks deferred: a defer() made elsewhere meanwhile (another test) stays recorded", async () => {
    const f = fake();
    const ran: string[] = [];
    const slow = gate();
    defer(
      async () => {
        await slow.promise;
        ran.push('a');
      },
      { name: 'a' },
    );
    const runA = f.run('a');
    defer(() => void ran.push('b'), { name: 'b' }); // not nested: made while 'a' runs, by other code
    slow.open();
    await runA;
    expect(ran).toEqual(['a']);
    f.assertDeferred('b');
  });
});

describe('fakeDefer(): runAll(outcome?)', () => {
  function record(log: string[]): void {
    defer(() => void log.push('mail'), { name: 'mail' });
    defer(() => void log.push('audit'), { name: 'audit' }).always();
    defer(() => void log.push('cache'));
  }

  it('defaults to HTTP 200: runs every callback in order and empties callbacks', async () => {
    const f = fake();
    const log: string[] = [];
    const outcomes: Outcome[] = [];
    record(log);
    defer(({ outcome }) => void outcomes.push(outcome));
    await f.runAll();
    expect(log).toEqual(['mail', 'audit', 'cache']);
    expect(outcomes).toEqual([{ kind: 'http', statusCode: 200, ok: true, aborted: false }]);
    expect(f.count).toBe(0);
  });

  it('on a failing status runs only always callbacks and discards the skipped ones', async () => {
    const f = fake();
    const log: string[] = [];
    const outcomes: Outcome[] = [];
    record(log);
    defer(({ outcome }) => void outcomes.push(outcome)).always();
    await f.runAll({ statusCode: 500 });
    expect(log).toEqual(['audit']);
    expect(outcomes).toEqual([{ kind: 'http', statusCode: 500, ok: false, aborted: false }]);
    expect(f.count).toBe(0);
    await f.run();
    expect(log).toEqual(['audit']);
  });

  it('on an abort runs only always callbacks and does not consult runWhen', async () => {
    const f = fake();
    const log: string[] = [];
    const outcomes: Outcome[] = [];
    const runWhen = vi.fn(() => true);
    await withDefer(
      () => {
        record(log);
        defer(({ outcome }) => void outcomes.push(outcome)).always();
      },
      { runWhen },
    );
    await f.runAll({ aborted: true });
    expect(log).toEqual(['audit']);
    expect(outcomes).toEqual([{ kind: 'http', ok: false, aborted: true }]);
    expect(runWhen).not.toHaveBeenCalled();
  });

  it("applies the scope's runWhen, judged once per scope", async () => {
    const f = fake();
    const log: string[] = [];
    const runWhen = vi.fn((outcome: Outcome) => outcome.statusCode === 202);
    await withDefer(() => record(log), { runWhen });
    await f.runAll({ statusCode: 200 });
    expect(log).toEqual(['audit']);
    expect(runWhen).toHaveBeenCalledTimes(1);
    await withDefer(() => record(log), { runWhen });
    await f.runAll({ statusCode: 202 });
    expect(log).toEqual(['audit', 'mail', 'audit', 'cache']);
  });

  it('a runWhen that throws counts as false and the run rejects with its error', async () => {
    const f = fake();
    const log: string[] = [];
    const boom = new Error('runWhen broke');
    await withDefer(() => record(log), {
      runWhen: () => {
        throw boom;
      },
    });
    expect(await rejection(f.runAll())).toBe(boom);
    expect(log).toEqual(['audit']);
  });

  it.each<[Partial<Outcome>, Outcome]>([
    [{ statusCode: 500 }, { kind: 'http', statusCode: 500, ok: false, aborted: false }],
    [{ statusCode: 201 }, { kind: 'http', statusCode: 201, ok: true, aborted: false }],
    [{ aborted: true }, { kind: 'http', ok: false, aborted: true }],
    [{ aborted: true, statusCode: 200 }, { kind: 'http', statusCode: 200, ok: false, aborted: true }],
    [{ ok: false }, { kind: 'http', statusCode: 500, ok: false, aborted: false }],
    [{ kind: 'scope' }, { kind: 'scope', ok: true, aborted: false }],
    [{ kind: 'scope', error: 'boom' }, { kind: 'scope', ok: false, aborted: false, error: 'boom' }],
  ])('normalizes the partial outcome %j', async (partial, expected) => {
    const f = fake();
    const seen: Outcome[] = [];
    defer(({ outcome }) => void seen.push(outcome)).always();
    await f.runAll(partial);
    expect(seen).toHaveLength(1);
    expect(seen[0]).toStrictEqual(expected);
  });

  it.each<[unknown, string]>([
    [{ status: 500 }, 'unknown key "status"'],
    [{ ok: true, statusCode: 500 }, 'ok: true contradicts statusCode 500'],
    [{ kind: 'scope', statusCode: 200 }, "a 'scope' outcome has no statusCode"],
    [{ kind: 'scope', aborted: true }, "a 'scope' outcome is never aborted"],
    [{ error: new Error('x') }, "error is only set on 'scope' outcomes"],
    [{ statusCode: 42 }, 'statusCode must be an HTTP status'],
    [{ kind: 'grpc' }, "kind must be 'http' or 'scope'"],
    ['500', 'expected an object, but received the string "500"'],
    [null, 'expected an object, but received null'],
  ])('rejects (never throws) the invalid outcome %j with ERR_DEFER_INVALID_OPTIONS', async (outcome, why) => {
    const f = fake();
    const fn = vi.fn();
    defer(fn);
    const promise = f.runAll(outcome as Partial<Outcome>);
    const error = await rejection(promise);
    expect(error).toBeInstanceOf(DeferError);
    expect(code(error)).toBe('ERR_DEFER_INVALID_OPTIONS');
    expect((error as Error).message).toContain(why);
    expect(fn).not.toHaveBeenCalled();
    expect(f.count).toBe(1);
  });

  it('runs nested defers after the others, under the same rules', async () => {
    const f = fake();
    const order: string[] = [];
    defer(() => {
      order.push('a');
      defer(() => void order.push('nested always')).always();
      defer(() => void order.push('nested skipped'));
    }).always();
    defer(() => void order.push('b')).always();
    await f.runAll({ statusCode: 503 });
    expect(order).toEqual(['a', 'b', 'nested always']);
    expect(f.count).toBe(0);
  });

  it('does not run a callback forgotten or replaced by an earlier one', async () => {
    const f = fake();
    const order: string[] = [];
    await withDefer(() => {
      defer(() => {
        order.push('first');
        expect(forget('second')).toBe(true);
        defer(() => void order.push('third, replaced'), { name: 'third' });
      });
      defer(() => void order.push('second'), { name: 'second' });
      defer(() => void order.push('third'), { name: 'third' });
    });
    await f.runAll();
    expect(order).toEqual(['first', 'third, replaced']);
  });

  it('refuses a self-deferring loop at maxNestingDepth and rejects with ERR_DEFER_OVERFLOW', async () => {
    const f = fake();
    configureDefer({ maxNestingDepth: 5 });
    let runs = 0;
    const again = (): void => {
      runs++;
      defer(again);
    };
    defer(again);
    const error = await rejection(f.runAll());
    expect(code(error)).toBe('ERR_DEFER_OVERFLOW');
    expect(runs).toBe(6); // generations 0 to 5
    expect(f.count).toBe(0);
  });

  it('reports a nested defer() refused after its run settled, as production reports a refusal', async () => {
    const f = fake();
    const reported: [unknown, DeferErrorInfo][] = [];
    configureDefer({ maxNestingDepth: 1, onError: (error, info) => void reported.push([error, info]) });
    const later = gate();
    let tail: Promise<unknown> | undefined;
    defer(() => {
      defer(() => {
        // Work the generation-1 callback leaves running: its defer() comes after runAll() resolved.
        tail = later.promise.then(() => defer(() => undefined, { name: 'gen-2' }));
      });
    });
    await f.runAll();
    later.open();
    await tail;
    expect(reported.map(([error, info]) => [code(error), info.phase, info.name])).toEqual([['ERR_DEFER_OVERFLOW', 'overflow', 'gen-2']]);
    expect(f.count).toBe(0);
  });
});

describe('fakeDefer(): failures of run() and runAll()', () => {
  it('keeps going when one throws, then rejects with exactly that error', async () => {
    const f = fake();
    const order: string[] = [];
    const boom = { not: 'an Error' };
    defer(() => {
      order.push('a');
      throw boom;
    });
    defer(() => void order.push('b'));
    expect(await rejection(f.runAll())).toBe(boom);
    expect(order).toEqual(['a', 'b']);
    expect(f.count).toBe(0);
  });

  it('rejects with an AggregateError, in run order, when several threw or rejected', async () => {
    const f = fake();
    const first = new Error('first');
    const second = new Error('second');
    const ran = vi.fn();
    defer(async () => {
      throw first;
    });
    defer(ran);
    defer(() => {
      throw second;
    });
    const error = await rejection(f.run());
    expect(error).toBeInstanceOf(AggregateError);
    expect((error as AggregateError).errors).toEqual([first, second]);
    expect((error as AggregateError).message).toMatch(/^2 deferred callbacks failed: /);
    expect(ran).toHaveBeenCalledTimes(1);
  });

  it('never calls onError (scope or configureDefer) and writes nothing to stderr', async () => {
    const f = fake();
    const globalHandler = vi.fn();
    const scopeHandler = vi.fn();
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    configureDefer({ onError: globalHandler });
    await withDefer(
      () => {
        defer(() => {
          throw new Error('in scope');
        });
      },
      { onError: scopeHandler },
    );
    defer(async () => {
      throw new Error('outside');
    });
    const error = await rejection(f.runAll());
    expect(error).toBeInstanceOf(AggregateError);
    expect(globalHandler).not.toHaveBeenCalled();
    expect(scopeHandler).not.toHaveBeenCalled();
    expect(stderr.mock.calls.filter(([chunk]) => String(chunk).includes('request-defer'))).toEqual([]);
  });
});

describe('fakeDefer(): assertions', () => {
  function deferAuditAndTwoAnonymous(): void {
    defer(() => {}, { name: 'audit-login' }).always();
    defer(() => {});
    defer(() => {});
  }

  it('assertDeferred(name) fails with an AssertionError listing what was deferred, grouped', () => {
    const f = fake();
    deferAuditAndTwoAnonymous();
    const error = thrown(() => f.assertDeferred('send-welcome-mail'));
    expect(error).toBeInstanceOf(AssertionError);
    expect(error).toMatchObject({ name: 'AssertionError', code: 'ERR_ASSERTION', generatedMessage: false });
    expect((error as Error).message).toBe(
      'Expected a deferred callback named "send-welcome-mail"; deferred were: "audit-login" (always), <anonymous> ×2',
    );
    // The stack starts at the caller, so runners point at the test line.
    expect((error as Error).stack!.split('\n')[1]).toContain('testing.test.ts');
  });

  it('assertDeferred(name) passes for an exact name only', () => {
    const f = fake();
    defer(() => {}, { name: 'welcome-mail' });
    f.assertDeferred('welcome-mail');
    expect((thrown(() => f.assertDeferred('welcome')) as Error).message).toBe(
      'Expected a deferred callback named "welcome"; deferred were: "welcome-mail"',
    );
    expect(thrown(() => f.assertDeferred('Welcome-Mail'))).toBeInstanceOf(AssertionError);
  });

  it('assertDeferred() asserts that anything was deferred', () => {
    const f = fake();
    const error = thrown(() => f.assertDeferred());
    expect(error).toBeInstanceOf(AssertionError);
    expect((error as Error).message).toBe('Expected at least one deferred callback; nothing was deferred');
    defer(() => {});
    f.assertDeferred();
    expect((thrown(() => f.assertDeferred('mail')) as Error).message).toBe(
      'Expected a deferred callback named "mail"; deferred were: <anonymous>',
    );
    f.clear();
    expect((thrown(() => f.assertDeferred('mail')) as Error).message).toBe(
      'Expected a deferred callback named "mail"; nothing was deferred',
    );
  });

  it('assertNotDeferred(name) fails when that name was deferred', () => {
    const f = fake();
    f.assertNotDeferred('audit-login');
    deferAuditAndTwoAnonymous();
    f.assertNotDeferred('send-welcome-mail');
    const error = thrown(() => f.assertNotDeferred('audit-login'));
    expect(error).toBeInstanceOf(AssertionError);
    expect(code(error)).toBe('ERR_ASSERTION');
    expect((error as Error).message).toBe(
      'Expected no deferred callback named "audit-login"; deferred were: "audit-login" (always), <anonymous> ×2',
    );
  });

  it('assertCount(n) states expected and actual', () => {
    const f = fake();
    f.assertCount(0);
    expect((thrown(() => f.assertCount(2)) as Error).message).toBe('Expected 2 deferred callbacks; nothing was deferred');
    defer(() => {}, { name: 'a' });
    f.assertCount(1);
    expect((thrown(() => f.assertCount(0)) as Error).message).toBe('Expected 0 deferred callbacks; 1 was deferred: "a"');
    defer(() => {});
    defer(() => {});
    const error = thrown(() => f.assertCount(1));
    expect(error).toBeInstanceOf(AssertionError);
    expect(error).toMatchObject({ code: 'ERR_ASSERTION', actual: 3, expected: 1, operator: 'strictEqual' });
    expect((error as Error).message).toBe('Expected 1 deferred callback; 3 were deferred: "a", <anonymous> ×2');
  });

  it('groups by label in order of first appearance: same names of other scopes ×n, always apart', async () => {
    const f = fake();
    await withDefer(() => void defer(() => {}, { name: 'mail' }));
    defer(() => {}, { name: 'mail', always: true });
    await withDefer(() => void defer(() => {}, { name: 'mail' }));
    defer(() => {});
    expect((thrown(() => f.assertCount(0)) as Error).message).toBe(
      'Expected 0 deferred callbacks; 4 were deferred: "mail" ×2, "mail" (always), <anonymous>',
    );
  });

  it('bad arguments are DeferErrors with ERR_DEFER_INVALID_OPTIONS', async () => {
    const f = fake();
    for (const call of [
      () => f.assertCount(-1),
      () => f.assertCount(1.5),
      () => f.assertDeferred(42 as never),
      () => f.assertNotDeferred(undefined as never),
    ]) {
      const error = thrown(call);
      expect(error).toBeInstanceOf(DeferError);
      expect(code(error)).toBe('ERR_DEFER_INVALID_OPTIONS');
    }
    expect(code(await rejection(f.run(7 as never)))).toBe('ERR_DEFER_INVALID_OPTIONS');
  });
});

describe('fakeDefer(): messages after records left', () => {
  it('names what already ran, was skipped, forgotten or replaced, instead of "nothing was deferred"', async () => {
    const f = fake();
    defer(() => undefined, { name: 'welcome-mail' });
    defer(() => undefined, { name: 'audit' }).always();
    defer(() => undefined, { name: 'cache' });
    defer(() => undefined, { name: 'cache' }); // replaces the first
    defer(() => undefined, { name: 'ping' });
    forget('ping');
    await f.runAll({ statusCode: 500 });
    expect((thrown(() => f.assertDeferred('welcome-mail')) as Error).message).toBe(
      'Expected a deferred callback named "welcome-mail"; nothing is recorded now ' +
        '(replaced: "cache"; forgotten: "ping"; skipped by runAll(): "welcome-mail", "cache"; already run: "audit" (always))',
    );
    expect((thrown(() => f.assertCount(1)) as Error).message).toMatch(/^Expected 1 deferred callback; nothing is recorded now \(replaced: /);
    defer(() => undefined);
    expect((thrown(() => f.assertDeferred('x')) as Error).message).toMatch(/; deferred were: <anonymous> \(replaced: "cache"; /);
    f.clear();
    expect((thrown(() => f.assertDeferred()) as Error).message).toBe('Expected at least one deferred callback; nothing was deferred');
  });

  it('names each failed callback in the AggregateError message', async () => {
    const f = fake();
    defer(
      () => {
        throw new Error('one');
      },
      { name: 'mail' },
    );
    defer(() => Promise.reject(new Error('two')));
    expect((await rejection(f.runAll())) as Error).toMatchObject({ message: '2 deferred callbacks failed: "mail", <anonymous>' });
  });

  it('its methods can be destructured', async () => {
    const f = fake();
    const { assertDeferred, assertCount, runAll, clear } = f;
    defer(() => undefined, { name: 'mail' });
    assertDeferred('mail');
    assertCount(1);
    await runAll();
    assertCount(0);
    clear();
    const error = thrown(() => assertDeferred('mail'));
    expect(error).toBeInstanceOf(AssertionError);
    expect((error as Error).stack).not.toMatch(/at (Fake\.)?assertDeferred \(/); // the stack starts at the caller
  });
});

describe('fakeDefer(): lifecycle', () => {
  it('a second fakeDefer() while one is active throws ERR_DEFER_FAKE_ACTIVE; the first keeps working', () => {
    const f = fake();
    const error = thrown(() => fakeDefer());
    expect(error).toBeInstanceOf(DeferError);
    expect(code(error)).toBe('ERR_DEFER_FAKE_ACTIVE');
    expect((error as Error).message).toContain('restore()');
    defer(() => {});
    f.assertCount(1);
  });

  it('restore() brings normal scheduling back and is idempotent', async () => {
    const f = fakeDefer();
    defer(() => {});
    f.restore();
    f.restore();
    expect(code(thrown(() => defer(() => {})))).toBe('ERR_DEFER_NO_SCOPE');
    const ran = vi.fn();
    await withDefer(() => void defer(ran), { await: true });
    expect(ran).toHaveBeenCalledTimes(1);
    const next = fakeDefer();
    next.assertCount(0);
    next.restore();
  });

  it('every member used after restore() throws ERR_DEFER_FAKE_RESTORED; run and runAll reject', async () => {
    const f = fakeDefer();
    f.restore();
    const uses: [string, () => unknown][] = [
      ['callbacks', () => f.callbacks],
      ['count', () => f.count],
      ['assertDeferred', () => f.assertDeferred()],
      ['assertNotDeferred', () => f.assertNotDeferred('x')],
      ['assertCount', () => f.assertCount(0)],
      ['clear', () => f.clear()],
    ];
    for (const [member, use] of uses) {
      const error = thrown(use);
      expect(error).toBeInstanceOf(DeferError);
      expect(code(error)).toBe('ERR_DEFER_FAKE_RESTORED');
      expect((error as Error).message).toContain(`fakeDefer().${member}`);
    }
    const run = f.run();
    const runAll = f.runAll();
    expect(code(await rejection(run))).toBe('ERR_DEFER_FAKE_RESTORED');
    expect(code(await rejection(runAll))).toBe('ERR_DEFER_FAKE_RESTORED');
  });

  it('clear() forgets every record', () => {
    const f = fake();
    defer(() => {});
    defer(() => {}, { name: 'x' });
    f.clear();
    f.assertCount(0);
  });

  it('supports `using`: restored at the end of the block', () => {
    {
      using f = fakeDefer();
      defer(() => {});
      f.assertCount(1);
    }
    expect(code(thrown(() => defer(() => {})))).toBe('ERR_DEFER_NO_SCOPE');
  });

  it('stacks with withoutDefer(): restoring in any order revives nothing', () => {
    const f = fakeDefer();
    const restoreInline = withoutDefer();
    const ran = vi.fn();
    defer(ran); // withoutDefer() is on top
    expect(ran).toHaveBeenCalledTimes(1);
    expect(code(thrown(() => fakeDefer()))).toBe('ERR_DEFER_FAKE_ACTIVE');
    f.restore(); // not on top: unlinked
    defer(ran);
    expect(ran).toHaveBeenCalledTimes(2);
    restoreInline();
    expect(code(thrown(() => defer(() => {})))).toBe('ERR_DEFER_NO_SCOPE');
    const next = fakeDefer();
    next.restore();
  });

  it('a fake installed over withoutDefer() records until restored, then inline mode resumes', () => {
    inline();
    const f = fakeDefer();
    const ran = vi.fn();
    defer(ran);
    f.assertCount(1);
    expect(ran).not.toHaveBeenCalled();
    f.restore();
    defer(ran);
    expect(ran).toHaveBeenCalledTimes(1);
  });
});

describe('withoutDefer()', () => {
  it('runs the callback synchronously inside defer(), outside a scope, with a passing scope outcome', () => {
    inline();
    const contexts: DeferContext[] = [];
    const cb = defer((context) => void contexts.push(context), { name: 'now' });
    expect(contexts).toHaveLength(1);
    expect(cb).toBeInstanceOf(DeferredCallback);
    expect(cb.name).toBe('now');
    expect(contexts[0]!.name).toBe('now');
    expect(contexts[0]!.outcome).toStrictEqual({ kind: 'scope', ok: true, aborted: false });
  });

  it('does not check the status: runs inside a request that fails', async () => {
    inline();
    const ran = vi.fn();
    const app = express();
    app.use(deferMiddleware());
    app.get('/', (req, res) => {
      defer(ran);
      res.status(500).end();
    });
    await request(app).get('/').expect(500);
    expect(ran).toHaveBeenCalledTimes(1);
  });

  it('ignores the scheduler limits', async () => {
    inline();
    const onError = vi.fn();
    configureDefer({ concurrency: 1, maxQueued: 0, onError });
    let started = 0;
    const gates: (() => void)[] = [];
    for (let i = 0; i < 3; i++) {
      defer(async () => {
        started++;
        await new Promise<void>((resolve) => gates.push(resolve));
      });
    }
    expect(started).toBe(3);
    for (const open of gates) open();
    expect(await drain()).toEqual({ completed: 3, failed: 0, abandoned: 0 });
    expect(onError).not.toHaveBeenCalled();
  });

  it("routes errors to the scope's onError", async () => {
    inline();
    const scopeHandler = vi.fn();
    const globalHandler = vi.fn();
    configureDefer({ onError: globalHandler });
    const boom = new Error('sync');
    const later = 'async, not an Error';
    await withDefer(
      () => {
        defer(
          () => {
            throw boom;
          },
          { name: 'sync' },
        );
        defer(async () => Promise.reject(later), { name: 'async' });
      },
      { onError: scopeHandler },
    );
    await drain();
    expect(scopeHandler.mock.calls).toEqual([
      [boom, { phase: 'callback', name: 'sync', outcome: { kind: 'scope', ok: true, aborted: false } }],
      [later, { phase: 'callback', name: 'async', outcome: { kind: 'scope', ok: true, aborted: false } }],
    ]);
    expect(globalHandler).not.toHaveBeenCalled();
  });

  it("routes errors to configureDefer's onError outside a scope, else to stderr", async () => {
    inline();
    const globalHandler = vi.fn();
    configureDefer({ onError: globalHandler });
    const boom = new Error('outside');
    defer(
      () => {
        throw boom;
      },
      { name: 'outside' },
    );
    expect(globalHandler).toHaveBeenCalledWith(boom, {
      phase: 'callback',
      name: 'outside',
      outcome: { kind: 'scope', ok: true, aborted: false },
    });
    configureDefer({ onError: undefined });
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    defer(
      () => {
        throw new Error('to stderr');
      },
      { name: 'loud' },
    );
    const written = stderr.mock.calls.map(([chunk]) => String(chunk)).join('');
    expect(written).toContain('deferred callback "loud" failed (phase: callback)');
    expect(written).toContain('to stderr');
    expect(globalHandler).toHaveBeenCalledTimes(1);
  });

  it('applies timeouts (the call’s, else the scope’s), with fake timers', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    inline();
    const reports: [unknown, DeferErrorInfo][] = [];
    const onError = (error: unknown, info: DeferErrorInfo): void => void reports.push([error, info]);
    const signals: AbortSignal[] = [];
    const hang = ({ signal }: DeferContext): Promise<void> => {
      signals.push(signal);
      return new Promise((resolve) => signal.addEventListener('abort', () => resolve()));
    };
    configureDefer({ onError });
    defer(hang, { name: 'own', timeout: 1_000 });
    await withDefer(() => void defer(hang, { name: 'scoped' }), { timeout: 500, onError });
    vi.advanceTimersByTime(499);
    expect(reports).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(reports.map(([error, info]) => [code(error), info.phase, info.name])).toEqual([
      ['ERR_DEFER_TIMEOUT', 'timeout', 'scoped'],
    ]);
    vi.advanceTimersByTime(500);
    expect(reports.map(([, info]) => info.name)).toEqual(['scoped', 'own']);
    expect(signals.map((signal) => signal.aborted)).toEqual([true, true]);
    expect(signals[0]!.reason).toBe(reports[1]![0]);
    expect(reports[0]![0]).toBeInstanceOf(DeferError);
    expect(await drain()).toMatchObject({ abandoned: 0 });
  });

  it("tracks an async callback's promise in drain()", async () => {
    inline();
    let release!: () => void;
    let done = false;
    defer(async () => {
      await new Promise<void>((resolve) => (release = resolve));
      done = true;
    });
    let drained = false;
    const drainer = drain().then((summary) => {
      drained = true;
      return summary;
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(drained).toBe(false);
    release();
    expect(await drainer).toEqual({ completed: 1, failed: 0, abandoned: 0 });
    expect(done).toBe(true);
  });

  it('is traced on request-defer:callback like any run', () => {
    inline();
    const messages: { name: string; outcome: Outcome }[] = [];
    const channel = dc.tracingChannel('request-defer:callback');
    const handlers = {
      start: (message: unknown) => void messages.push(message as { name: string; outcome: Outcome }),
      end() {},
      asyncStart() {},
      asyncEnd() {},
      error() {},
    };
    channel.subscribe(handlers);
    cleanups.push(() => channel.unsubscribe(handlers));
    defer(() => {}, { name: 'traced' });
    expect(messages).toMatchObject([{ name: 'traced', outcome: { kind: 'scope', ok: true, aborted: false } }]);
  });

  it('returns an idempotent restore function (also disposable with `using`)', async () => {
    const restore = withoutDefer();
    restore();
    const f = fake();
    restore(); // must not unlink the fake installed since
    defer(() => {});
    f.assertCount(1);
    f.restore();
    const ran = vi.fn();
    await withDefer(() => {
      defer(ran);
      expect(ran).not.toHaveBeenCalled(); // deferred again, not inline
    }, { await: true });
    expect(ran).toHaveBeenCalledTimes(1);
    {
      using _inline = withoutDefer();
      defer(ran);
      expect(ran).toHaveBeenCalledTimes(2);
    }
    expect(code(thrown(() => defer(() => {})))).toBe('ERR_DEFER_NO_SCOPE');
  });
});

// ---------------------------------------------------------------------------
// The examples of docs/testing.md, which shows each region below byte for
// byte (after its import lines); the last describe checks that it does.

// --- example: vitest
export const mailer = {
  sent: [] as string[],
  async send(to: string): Promise<void> {
    this.sent.push(to);
  },
};

export async function signUp(email: string): Promise<{ email: string }> {
  if (!email.includes('@')) throw new Error(`invalid email: ${email}`);
  const user = { email };
  defer(() => mailer.send(user.email), { name: 'welcome-mail' });
  return user;
}

describe('signUp', () => {
  let deferred: FakeDefer;
  beforeEach(() => {
    deferred = fakeDefer();
    mailer.sent = [];
  });
  afterEach(() => deferred.restore());

  it('defers the welcome mail; it is sent once the response succeeded', async () => {
    await signUp('ada@example.com');
    deferred.assertDeferred('welcome-mail');
    expect(mailer.sent).toEqual([]); // nothing is sent before the response
    await deferred.runAll({ statusCode: 201 });
    expect(mailer.sent).toEqual(['ada@example.com']);
  });

  it('sends no mail when the request fails', async () => {
    await signUp('ada@example.com');
    await deferred.runAll({ statusCode: 500 }); // skipped, as in production
    expect(mailer.sent).toEqual([]);
  });

  it('defers nothing for an invalid address', async () => {
    await expect(signUp('ada')).rejects.toThrow('invalid email');
    deferred.assertNotDeferred('welcome-mail');
    deferred.assertCount(0);
  });
});
// --- end example

// --- example: without-defer
describe('signUp, callbacks run inline', () => {
  let restoreDefer: () => void;
  beforeEach(() => {
    restoreDefer = withoutDefer();
    mailer.sent = [];
  });
  afterEach(() => restoreDefer());

  it('sends the welcome mail inside defer()', async () => {
    await signUp('ada@example.com');
    await drain(); // an async callback's promise has settled
    expect(mailer.sent).toEqual(['ada@example.com']);
  });
});
// --- end example

// --- example: integration
describe('POST /signup, with the real middleware', () => {
  const app = express();
  app.use(deferMiddleware());
  app.post('/signup', async (req, res) => {
    await signUp(String(req.query.email));
    res.sendStatus(req.query.fail === undefined ? 201 : 500);
  });

  it('sends the mail after a successful response only', async () => {
    mailer.sent = [];
    await request(app).post('/signup').query({ email: 'ada@example.com' }).expect(201);
    await request(app).post('/signup').query({ email: 'bob@example.com', fail: '1' }).expect(500);
    await drain(); // every callback the two requests deferred has settled
    expect(mailer.sent).toEqual(['ada@example.com']);
  });
});
// --- end example

// --- example: concurrent
describe.concurrent('signUp in concurrent tests: one scope per test, no fake', () => {
  it('mails after work that succeeded', async () => {
    await withDefer(() => signUp('grace@example.com'), { await: true });
    expect(mailer.sent).toContain('grace@example.com');
  });

  it('does not mail after work that failed', async () => {
    const failing = withDefer(
      async () => {
        await signUp('alan@example.com');
        throw new Error('rolled back');
      },
      { await: true },
    );
    await expect(failing).rejects.toThrow('rolled back');
    expect(mailer.sent).not.toContain('alan@example.com');
  });
});
// --- end example

describe('docs/testing.md shows the tested examples', () => {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const page = readFileSync(join(root, 'docs/testing.md'), 'utf8');

  /** The ```ts or ```js block right after `<!-- example: marker -->`. */
  function shown(marker: string): string {
    const start = page.indexOf(`<!-- example: ${marker} -->\n\`\`\``);
    expect(start, `docs/testing.md has no block marked ${marker}`).toBeGreaterThanOrEqual(0);
    const open = page.indexOf('\n', page.indexOf('```', start)) + 1;
    return page.slice(open, page.indexOf('\n```\n', open) + 1);
  }

  function region(source: string, name: string): string {
    const begin = `// --- example: ${name}\n`;
    const start = source.indexOf(begin);
    expect(start, `no region ${name}`).toBeGreaterThanOrEqual(0);
    return source.slice(start + begin.length, source.indexOf('// --- end example\n', start));
  }

  /** The block after its leading import lines, which must import published entry points. */
  function body(block: string): string {
    const lines = block.split('\n');
    let i = 0;
    while (lines[i]!.startsWith('import ')) {
      expect(lines[i]).toMatch(/ from '(vitest|supertest|express|\.\/signup\.js|request-defer(\/\w+)?)';$/);
      i++;
    }
    expect(lines[i], 'a blank line after the imports').toBe('');
    return lines.slice(i + 1).join('\n');
  }

  it.each(['vitest', 'without-defer', 'integration', 'concurrent'])('the %s example is the tested code', (name) => {
    const source = readFileSync(join(root, 'test/testing.test.ts'), 'utf8');
    expect(body(shown(`test/testing.test.ts#${name}`))).toBe(region(source, name));
  });

  it('the node:test example is test/node-test/signup.node-test.mjs with published imports', () => {
    const source = readFileSync(join(root, 'test/node-test/signup.node-test.mjs'), 'utf8');
    const published = source.replace(/from '\.\.\/\.\.\/dist\/(\w+)\.js'/g, (_, entry: string) =>
      entry === 'index' ? "from 'request-defer'" : `from 'request-defer/${entry}'`,
    );
    expect(shown('test/node-test/signup.node-test.mjs')).toBe(published);
  });
});
