import { describe, expect, it } from 'vitest';
import Koa3 from 'koa3';
import request from 'supertest';
import { defer, drain, type Outcome } from '../src/index.js';
import { deferMiddleware } from '../src/koa.js';
import { harness } from './support/adapters.js';
import { conformance } from './support/conformance.js';

conformance(harness('koa 2'));
conformance(harness('koa 3'));

describe('request-defer/koa', () => {
  it('returns a named middleware function', () => {
    expect(deferMiddleware().name).toBe('requestDefer');
  });

  it('reads the status at finish, after Koa set it (a body of null gives 204)', async () => {
    const seen: Outcome[] = [];
    const app = new Koa3();
    app.use(deferMiddleware() as never);
    app.use(async (ctx) => {
      defer((c) => void seen.push(c.outcome));
      ctx.body = null;
    });
    await request(app.callback()).get('/').expect(204);
    await drain();
    expect(seen).toEqual([{ kind: 'http', statusCode: 204, ok: true, aborted: false }]);
  });

  it('sees a status an outer middleware sets after next() resolves', async () => {
    const seen: Outcome[] = [];
    const app = new Koa3();
    app.silent = true;
    app.use(async (ctx, next) => {
      await next();
      ctx.status = 503;
    });
    app.use(deferMiddleware() as never);
    app.use(async (ctx) => {
      defer((c) => void seen.push(c.outcome)).always();
      ctx.body = 'fine so far';
    });
    await request(app.callback()).get('/').expect(503);
    await drain();
    expect(seen).toEqual([{ kind: 'http', statusCode: 503, ok: false, aborted: false }]);
  });

  it('mounted uncalled (app.use(deferMiddleware)), says to call the factory', async () => {
    const errors: unknown[] = [];
    const app = new Koa3();
    app.silent = true;
    app.on('error', (error: unknown) => void errors.push(error));
    app.use(deferMiddleware as never);
    await request(app.callback()).get('/').expect(500);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: 'ERR_DEFER_INVALID_OPTIONS' });
    expect((errors[0] as Error).message).toMatch(/^deferMiddleware\(\) \(request-defer\/koa\) received a request as its options: .*app\.use\(deferMiddleware\(\)\)\.$/);
  });

  it('refuses the withDefer-only await option', () => {
    expect(() => deferMiddleware({ await: true } as never)).toThrow(expect.objectContaining({ code: 'ERR_DEFER_INVALID_OPTIONS' }));
  });
});
