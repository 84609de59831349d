import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { DeferError } from '../src/index.js';
import { withDeferHandler } from '../src/node.js';
import { httpOutcome } from '../src/core/engine.js';
import { harness } from './support/adapters.js';
import { conformance } from './support/conformance.js';

conformance(harness('node:http'));

describe('request-defer/node', () => {
  const fakeRes = () => ({ on: () => undefined }) as unknown as ServerResponse;
  const fakeReq = {} as IncomingMessage;

  it('behaves like the handler: same this, same return value', () => {
    const self = { tag: 'server' };
    const wrapped = withDeferHandler(function (this: unknown, req: IncomingMessage) {
      return { self: this, req };
    });
    expect(wrapped.call(self, fakeReq, fakeRes())).toEqual({ self, req: fakeReq });
  });

  it('catches nothing: a throw or a rejection reaches the caller unchanged', async () => {
    const boom = new Error('boom');
    expect(() =>
      withDeferHandler(() => {
        throw boom;
      })(fakeReq, fakeRes()),
    ).toThrow(boom);
    await expect(withDeferHandler(async () => Promise.reject(boom))(fakeReq, fakeRes())).rejects.toBe(boom);
  });

  it('refuses a non-function handler and bad options', () => {
    expect(() => withDeferHandler('nope' as never)).toThrow(DeferError);
    expect(() => withDeferHandler('nope' as never)).toThrow(expect.objectContaining({ code: 'ERR_DEFER_INVALID_CALLBACK' }));
    expect(() => withDeferHandler(() => undefined, { mode: 'fast' } as never)).toThrow(
      expect.objectContaining({ code: 'ERR_DEFER_INVALID_OPTIONS' }),
    );
  });
});

describe('the outcome of a closed response', () => {
  const closed = (statusCode: unknown, writableFinished = true, headersSent = true) =>
    ({ statusCode, writableFinished, headersSent }) as unknown as ServerResponse;

  it('is frozen and shared by every finished response with the same status', () => {
    const a = httpOutcome(closed(201));
    expect(a).toEqual({ kind: 'http', statusCode: 201, ok: true, aborted: false });
    expect(Object.isFrozen(a)).toBe(true);
    expect(httpOutcome(closed(201))).toBe(a);
    expect(httpOutcome(closed(503))).toMatchObject({ statusCode: 503, ok: false });
  });

  it('caches nothing for a status code reassigned outside 100–999 after the response finished', () => {
    for (const statusCode of [99_999, 2.5, 'teapot']) {
      const outcome = httpOutcome(closed(statusCode));
      expect(outcome.statusCode).toBe(statusCode);
      expect(httpOutcome(closed(statusCode))).not.toBe(outcome);
    }
  });

  it('is aborted when the response closed before it finished', () => {
    expect(httpOutcome(closed(200, false))).toEqual({ kind: 'http', statusCode: 200, ok: false, aborted: true });
    expect(httpOutcome(closed(200, false, false))).toEqual({ kind: 'http', ok: false, aborted: true });
  });
});
