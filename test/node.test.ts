import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { DeferError } from '../src/index.js';
import { withDeferHandler } from '../src/node.js';
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
