/**
 * defer(), DeferredCallback, forget() and currentCollection(): the root API
 * as a scope sees it. HTTP behaviour is in the adapters' conformance suite.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  configureDefer,
  currentCollection,
  defer,
  DeferError,
  DeferredCallback,
  DeferredCallbackCollection,
  drain,
  forget,
  withDefer,
  type DeferContext,
  type DeferErrorInfo,
} from '../src/index.js';

afterEach(async () => {
  configureDefer({ concurrency: undefined, maxQueued: undefined, maxNestingDepth: undefined, onError: undefined });
  await drain();
});

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(DeferError);
    return (error as DeferError).code;
  }
  return undefined;
};

describe('defer() outside a scope and bad input', () => {
  it('throws ERR_DEFER_NO_SCOPE outside a scope, saying how to open one', () => {
    expect(codeOf(() => defer(() => undefined))).toBe('ERR_DEFER_NO_SCOPE');
    expect(() => defer(() => undefined)).toThrow(/deferMiddleware\(\)[\s\S]*withDefer\(/);
    // The other cause: context lost inside a request, and its fix.
    expect(() => defer(() => undefined)).toThrow(/async context was lost[\s\S]*AsyncResource\.bind\(\)/);
  });

  it('checks its arguments before it looks for a scope', () => {
    expect(codeOf(() => defer('x' as never))).toBe('ERR_DEFER_INVALID_CALLBACK');
    expect(codeOf(() => defer(() => undefined, { timeout: -1 }))).toBe('ERR_DEFER_INVALID_OPTIONS');
  });

  it.each([
    ['a non-function', 'x', undefined, 'ERR_DEFER_INVALID_CALLBACK', /defer\(\).*the string "x"/s],
    ['null', null, undefined, 'ERR_DEFER_INVALID_CALLBACK', /null/],
    [
      'a promise (defer(send(user)))',
      Promise.resolve(),
      undefined,
      'ERR_DEFER_INVALID_CALLBACK',
      /received a promise: the work already started.*defer\(\(\) => sendMail\(user\)\), not defer\(sendMail\(user\)\)/s,
    ],
    ['a negative timeout', () => undefined, { timeout: -1 }, 'ERR_DEFER_INVALID_OPTIONS', /timeout/],
    ['a fractional timeout', () => undefined, { timeout: 1.5 }, 'ERR_DEFER_INVALID_OPTIONS', /timeout/],
    ['a timeout Node cannot honour', () => undefined, { timeout: 2 ** 31 }, 'ERR_DEFER_INVALID_OPTIONS', /2147483647/],
    ['an unknown key', () => undefined, { timout: 5 }, 'ERR_DEFER_INVALID_OPTIONS', /timout/],
    ['a non-boolean always', () => undefined, { always: 'yes' }, 'ERR_DEFER_INVALID_OPTIONS', /always/],
    ['an empty name', () => undefined, { name: '' }, 'ERR_DEFER_INVALID_OPTIONS', /name/],
    ['options that are not an object', () => undefined, 5, 'ERR_DEFER_INVALID_OPTIONS', /object/],
  ])('%s is refused with a clear error, and nothing is registered', async (_label, callback, options, code, message) => {
    await withDefer(() => {
      const attempt = () => defer(callback as never, options as never);
      expect(codeOf(attempt)).toBe(code);
      expect(attempt).toThrow(message);
      expect(currentCollection()!.size).toBe(0);
    });
  });

  it('accepts a valid timeout up to 2 147 483 647 ms', async () => {
    await withDefer(() => {
      defer(() => undefined, { timeout: 2_147_483_647 });
      expect(currentCollection()!.size).toBe(1);
      forget([...currentCollection()!][0]!.name);
    });
  });
});

describe('DeferredCallback', () => {
  it('carries name, isAlways and always()', async () => {
    await withDefer(() => {
      const named = defer(() => undefined, { name: 'mail' });
      expect(named).toBeInstanceOf(DeferredCallback);
      expect(named.name).toBe('mail');
      expect(named.isAlways).toBe(false);
      expect(named.always()).toBe(named);
      expect(named.isAlways).toBe(true);
      expect(named.always(false).isAlways).toBe(false);
      expect(defer(() => undefined, { always: true }).isAlways).toBe(true);
      expect(codeOf(() => named.always('yes' as never))).toBe('ERR_DEFER_INVALID_OPTIONS');
    });
  });

  it('generates names unique in the process, decorated by the function name', async () => {
    const names: string[] = [];
    await withDefer(() => {
      function sendMail() {}
      names.push(defer(sendMail).name, defer(sendMail).name, defer(() => undefined).name);
    });
    expect(names[0]).toMatch(/^sendMail#\d+$/);
    expect(names[1]).toMatch(/^sendMail#\d+$/);
    expect(names[0]).not.toBe(names[1]);
    expect(names[2]).toMatch(/^deferred#\d+$/);
  });

  it("never throws on a function's odd name: a throwing getter, a static name() method", async () => {
    const errors: unknown[] = [];
    const throwing = Object.defineProperty(() => {
      throw new Error('boom');
    }, 'name', {
      get() {
        throw new Error('name getter');
      },
    });
    class Job {
      static name(): string {
        return 'not a string property';
      }
    }
    const names: string[] = [];
    await withDefer(
      () => {
        names.push(defer(throwing).name, defer(Job as never).name);
      },
      { await: true, onError: (error) => void errors.push(error) },
    );
    expect(names[0]).toMatch(/^deferred#\d+$/);
    expect(names[1]).toMatch(/^deferred#\d+$/);
    // Both ran and failed (the class cannot be called without new): each reported, nothing thrown.
    expect(errors.map((e) => (e as Error).message)).toEqual(['boom', expect.stringMatching(/cannot be invoked without 'new'/)]);
  });

  it('exposes the options it was given', async () => {
    await withDefer(() => {
      expect(defer(() => undefined, { name: 'a', timeout: 5 }).options).toEqual({ name: 'a', timeout: 5 });
      expect(defer(() => undefined).options).toEqual({});
    });
  });
});

describe('running', () => {
  it('calls each callback with { signal, outcome, name }', async () => {
    const contexts: DeferContext[] = [];
    await withDefer(
      () => {
        defer((context) => void contexts.push(context), { name: 'inspect' });
      },
      { await: true },
    );
    expect(contexts).toHaveLength(1);
    const [context] = contexts;
    expect(context!.name).toBe('inspect');
    expect(context!.outcome).toEqual({ kind: 'scope', ok: true, aborted: false });
    expect(context!.signal).toBeInstanceOf(AbortSignal);
    expect(context!.signal.aborted).toBe(false);
  });

  it('accepts sync and async callbacks and thenables', async () => {
    const ran: string[] = [];
    await withDefer(
      () => {
        defer(() => void ran.push('sync'));
        defer(async () => void ran.push('async'));
        defer(() => ({ then: (resolve: () => void) => (ran.push('thenable'), resolve()) }));
      },
      { await: true },
    );
    expect(ran).toEqual(['sync', 'async', 'thenable']);
  });

  it('a callback failure is reported with exactly the value thrown', async () => {
    const errors: [unknown, DeferErrorInfo][] = [];
    const thrown = { not: 'an Error' };
    await withDefer(
      () => {
        defer(
          () => {
            throw thrown;
          },
          { name: 'odd' },
        );
        defer(() => Promise.reject(undefined), { name: 'undefined' });
      },
      { await: true, onError: (error, info) => errors.push([error, info]) },
    );
    expect(errors).toEqual([
      [thrown, { phase: 'callback', name: 'odd', outcome: { kind: 'scope', ok: true, aborted: false } }],
      [undefined, { phase: 'callback', name: 'undefined', outcome: { kind: 'scope', ok: true, aborted: false } }],
    ]);
    expect(errors[0]![0]).toBe(thrown);
  });

  it('routes errors to the scope onError, else configureDefer onError, else stderr', async () => {
    const global = vi.fn();
    configureDefer({ onError: global });
    const scoped = vi.fn();
    await withDefer(() => void defer(() => Promise.reject(new Error('a'))), { await: true, onError: scoped });
    expect(scoped).toHaveBeenCalledTimes(1);
    expect(global).not.toHaveBeenCalled();
    await withDefer(() => void defer(() => Promise.reject(new Error('b'))), { await: true });
    expect(global).toHaveBeenCalledTimes(1);
    configureDefer({ onError: undefined });
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      await withDefer(() => void defer(() => Promise.reject(new Error('c')), { name: 'to-stderr' }), { await: true });
      expect(write).toHaveBeenCalledTimes(1);
      expect(String(write.mock.calls[0]![0])).toMatch(/request-defer: deferred callback "to-stderr" failed \(phase: callback\):[\s\S]*Error: c/);
    } finally {
      write.mockRestore();
    }
  });

  it('a handler that throws or rejects has that error written to stderr, never thrown', async () => {
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const unhandled = vi.fn();
    process.on('unhandledRejection', unhandled);
    try {
      await withDefer(() => void defer(() => Promise.reject(new Error('x'))), {
        await: true,
        onError: () => {
          throw new Error('handler broke');
        },
      });
      await withDefer(() => void defer(() => Promise.reject(new Error('y'))), {
        await: true,
        onError: () => Promise.reject(new Error('handler rejected')),
      });
      await new Promise((resolve) => setImmediate(resolve));
      const output = write.mock.calls.map((call) => String(call[0])).join('');
      expect(output).toMatch(/onError handler threw:[\s\S]*handler broke/);
      expect(output).toMatch(/onError handler rejected:[\s\S]*handler rejected/);
      expect(unhandled).not.toHaveBeenCalled();
    } finally {
      write.mockRestore();
      process.off('unhandledRejection', unhandled);
    }
  });
});

describe('names and forget()', () => {
  it('only explicit names replace; started callbacks are unaffected', async () => {
    const ran: string[] = [];
    await withDefer(
      () => {
        function same() {
          ran.push('fn-named');
        }
        defer(same);
        defer(same);
        defer(
          () => {
            ran.push('x1');
            // x1 has started: a same-name defer adds a new one.
            defer(() => void ran.push('x2'), { name: 'x' });
          },
          { name: 'x' },
        );
      },
      { await: true },
    );
    expect(ran).toEqual(['fn-named', 'fn-named', 'x1', 'x2']);
  });

  it('forget() works during the invocation until the callback starts', async () => {
    const ran: string[] = [];
    const results: boolean[] = [];
    await withDefer(
      () => {
        defer(() => {
          ran.push('first');
          results.push(forget('third'), forget('first'));
        }, { name: 'first' });
        defer(() => void ran.push('second'));
        defer(() => void ran.push('third'), { name: 'third' });
      },
      { await: true },
    );
    expect(ran).toEqual(['first', 'second']);
    expect(results).toEqual([true, false]);
  });

  it('forget() accepts a generated name', async () => {
    const ran: string[] = [];
    await withDefer(
      () => {
        const cb = defer(() => void ran.push('gone'));
        defer(() => void ran.push('kept'));
        expect(forget(cb.name)).toBe(true);
        expect(forget(cb.name)).toBe(false);
        expect(forget('deferred#not-a-number')).toBe(false);
      },
      { await: true },
    );
    expect(ran).toEqual(['kept']);
  });

  it('forget() outside a scope returns false and never throws; inside one, a non-string name is refused', async () => {
    expect(forget('anything')).toBe(false);
    expect(forget(42 as never)).toBe(false);
    await withDefer(() => {
      expect(codeOf(() => forget(42 as never))).toBe('ERR_DEFER_INVALID_OPTIONS');
    });
  });
});

describe('currentCollection()', () => {
  it('is undefined outside a scope', () => {
    expect(currentCollection()).toBeUndefined();
  });

  it('holds the callbacks not yet started, in run order, and forgets by name', async () => {
    await withDefer(() => {
      const collection = currentCollection()!;
      expect(collection).toBeInstanceOf(DeferredCallbackCollection);
      expect(collection.size).toBe(0);
      const a = defer(() => undefined, { name: 'a' });
      const b = defer(() => undefined);
      const c = defer(() => undefined, { name: 'c' });
      expect(collection.size).toBe(3);
      expect([...collection]).toEqual([a, b, c]);
      expect(collection.forget('a')).toBe(true);
      expect([...collection]).toEqual([b, c]);
      expect(collection.size).toBe(2);
      expect(collection.forget('a')).toBe(false);
      expect(() => collection.forget(1 as never)).toThrow(DeferError);
      collection.forget('c');
      collection.forget(b.name);
      expect(collection.size).toBe(0);
    });
  });

  it('is the same collection anywhere in the scope, and a different one in another scope', async () => {
    const seen: unknown[] = [];
    await Promise.all([
      withDefer(async () => {
        seen.push(currentCollection());
        await null;
        seen.push(currentCollection());
      }),
      withDefer(async () => {
        seen.push(currentCollection());
      }),
    ]);
    expect(seen[0]).toBe(seen[2]);
    expect(seen[0]).not.toBe(seen[1]);
  });
});

describe('one state across copies', () => {
  it('keeps its state on globalThis[Symbol.for("request-defer")] with a protocol version', () => {
    const state = (globalThis as unknown as Record<symbol, { version: number }>)[Symbol.for('request-defer')];
    expect(state).toBeDefined();
    expect(state!.version).toBe(1);
  });

  it('instanceof holds for objects carrying the shared brand', () => {
    const foreign = Object.create(null) as Record<symbol, unknown>;
    foreign[Symbol.for('request-defer.DeferError')] = true;
    expect(foreign).toBeInstanceOf(DeferError);
    expect({}).not.toBeInstanceOf(DeferError);
    expect(new Error('x')).not.toBeInstanceOf(DeferError);
  });
});
