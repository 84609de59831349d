import { describe, expect, it } from 'vitest';
import express5 from 'express5';
import request from 'supertest';
import { defer, drain, DeferError } from '../src/index.js';
import { deferMiddleware } from '../src/express.js';
import { harness } from './support/adapters.js';
import { conformance } from './support/conformance.js';

conformance(harness('express 4'));
conformance(harness('express 5'));

describe('request-defer/express', () => {
  it('returns a named middleware function', () => {
    const mw = deferMiddleware();
    expect(mw.name).toBe('requestDefer');
    expect(mw.length).toBe(3);
  });

  it('validates its options once, at creation', () => {
    const attempt = (options: unknown) => () => deferMiddleware(options as never);
    expect(attempt({ mode: 'fast' })).toThrow(DeferError);
    expect(attempt({ mode: 'fast' })).toThrow(/mode/);
    expect(attempt({ timout: 5 })).toThrow(/timout/);
    expect(attempt({ await: true })).toThrow(/await/);
    expect(attempt({ timeout: -1 })).toThrow(/timeout/);
    expect(attempt({ runWhen: 'yes' })).toThrow(/runWhen/);
    try {
      deferMiddleware({ mode: 'fast' } as never);
    } catch (error) {
      expect((error as DeferError).code).toBe('ERR_DEFER_INVALID_OPTIONS');
      expect((error as Error).message).toMatch(/deferMiddleware\(\)/);
    }
  });

  it('mounted uncalled (app.use(deferMiddleware)), says to call the factory', async () => {
    const errors: unknown[] = [];
    const app = express5();
    app.use(deferMiddleware as never);
    app.get('/', (_req, res) => void res.send('unreachable'));
    app.use((error: unknown, _req: unknown, res: express5.Response, _next: unknown) => {
      errors.push(error);
      res.status(500).end();
    });
    await request(app).get('/').expect(500);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(DeferError);
    expect(errors[0]).toMatchObject({ code: 'ERR_DEFER_INVALID_OPTIONS' });
    expect((errors[0] as Error).message).toBe(
      'deferMiddleware() (request-defer/express) received a request as its options: the factory itself was mounted, ' +
        'as app.use(deferMiddleware). Call it to get the middleware: app.use(deferMiddleware()).',
    );
  });

  it('works with supertest on a real Express 5 app, from a service with no req in hand', async () => {
    const sent: string[] = [];
    const mailer = { send: async (to: string) => void sent.push(to) };
    const signUp = async (email: string) => {
      defer(() => mailer.send(email), { name: 'welcome-mail' });
      return { email };
    };
    const app = express5();
    app.use(deferMiddleware());
    app.get('/signup', async (req, res) => {
      res.status(201).json(await signUp(String(req.query.email)));
    });
    await request(app).get('/signup?email=ada@example.com').expect(201);
    await drain();
    expect(sent).toEqual(['ada@example.com']);
  });
});
