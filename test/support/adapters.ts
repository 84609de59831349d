/**
 * One harness per adapter: each maps the same framework-agnostic route
 * description onto its framework's own API, so the conformance suite
 * (conformance.ts) runs unchanged against every adapter. A new adapter only
 * needs a new harness here.
 */
import { AsyncResource } from 'node:async_hooks';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import express4 from 'express4';
import express5 from 'express5';
import Koa2 from 'koa2';
import Koa3 from 'koa3';
import { deferMiddleware as expressDefer } from '../../src/express.js';
import { deferMiddleware as koaDefer } from '../../src/koa.js';
import { withDeferHandler } from '../../src/node.js';
import type { DeferScopeOptions } from '../../src/index.js';

type Mw = Omit<DeferScopeOptions, 'await'>;

/** What a route does, whatever the framework. */
export interface RouteSpec {
  /** Runs inside the handler, in the request's async context (defer() calls go here). */
  run?: (request: { url: string }) => unknown;
  /** Awaited after run(), before anything is sent. */
  hold?: Promise<unknown>;
  status?: number;
  body?: string;
  /** Written one by one before the end (a chunked response). */
  chunks?: string[];
  /** Headers and a first chunk are sent, then the route waits for this before ending. */
  holdAfterHeaders?: Promise<unknown>;
  /** The server destroys the response after sending headers and a first chunk. */
  destroyAfterHeaders?: boolean;
  /** How the route fails instead of responding (support varies by framework). */
  fail?: 'throw' | 'next' | 'reject' | undefined;
  /** `status` of the thrown error. */
  failStatus?: number | undefined;
  /** Called when the handler starts; the handler then waits for the response's 'close' (the client left) before run(). */
  untilClosed?: () => void;
}

/**
 * Options of a server: `twice` mounts a second adapter on the same response
 * (with `lostContext`, reached through a step that loses the request's async
 * context, as a connection pool made at startup does); `lateMount` puts an
 * async middleware before the adapter that calls it, then waits for the
 * client to leave.
 */
export interface ListenExtra {
  twice?: boolean;
  lostContext?: boolean;
  lateMount?: () => void;
}

/** Made at load, outside any request: what runs in it has no request context. */
const startup = new AsyncResource('test-startup');
const loseContext = <A extends unknown[], R>(fn: (...args: A) => R, ...args: A): R => startup.runInAsyncScope(fn, undefined, ...args);

/** Resolves once `res` has emitted 'close'. */
export function closed(res: ServerResponse): Promise<void> {
  return res.closed ? Promise.resolve() : new Promise((resolve) => res.once('close', () => resolve()));
}

export type Feature = 'throw' | 'next' | 'reject';

export interface Harness {
  readonly name: string;
  readonly features: ReadonlySet<Feature>;
  /** Serves `routes` on 127.0.0.1 behind the adapter. */
  listen(routes: Record<string, RouteSpec>, options?: Mw, extra?: ListenExtra): Promise<Running>;
}

export interface Running {
  readonly port: number;
  readonly server: Server;
  close(): Promise<void>;
}

function failure(spec: RouteSpec): Error {
  return Object.assign(new Error('route failed on purpose'), spec.failStatus === undefined ? {} : { status: spec.failStatus, expose: true });
}

async function start(server: Server): Promise<Running> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Plain node:http writing, shared by the Express and node harnesses. */
async function respondNode(spec: RouteSpec, res: ServerResponse): Promise<void> {
  if (spec.hold !== undefined) await spec.hold;
  res.statusCode = spec.status ?? 200;
  if (spec.destroyAfterHeaders) {
    res.write('first');
    res.destroy();
    return;
  }
  if (spec.holdAfterHeaders !== undefined) {
    res.write('first');
    await spec.holdAfterHeaders;
  }
  for (const chunk of spec.chunks ?? []) res.write(chunk);
  res.end(spec.body ?? 'ok');
}

/**
 * `untilClosed`, shared by the Express and node harnesses: wait for the
 * client to leave, then defer() and respond in one tick, as
 * `defer(mail); res.status(201).json(user)` does after a slow await.
 */
async function respondAfterClose(spec: RouteSpec, res: ServerResponse, url: string): Promise<void> {
  spec.untilClosed!();
  await closed(res);
  void spec.run?.({ url });
  return respondNode(spec, res);
}

function expressHarness(name: string, factory: typeof express5 | typeof express4, features: Feature[]): Harness {
  return {
    name,
    features: new Set(features),
    listen(routes, options, extra) {
      // Both Express majors share this shape; the cast only bridges their typings.
      const app = (factory as typeof express5)();
      const lateMount = extra?.lateMount;
      if (lateMount !== undefined) {
        app.use((_req, res, next) => {
          lateMount();
          void closed(res).then(() => next());
        });
      }
      app.use(expressDefer(options) as unknown as express5.RequestHandler);
      const router = express5.Router();
      if (extra?.twice && extra.lostContext) router.use((_req, _res, next) => loseContext(() => next()));
      if (extra?.twice) router.use(expressDefer({ mode: 'parallel' }) as unknown as express5.RequestHandler);
      for (const [path, spec] of Object.entries(routes)) {
        router.get(path, (req, res, next) => {
          if (spec.fail === 'throw') {
            spec.run?.({ url: req.url });
            throw failure(spec);
          }
          const work = (async () => {
            if (spec.untilClosed !== undefined) return respondAfterClose(spec, res, req.url);
            await spec.run?.({ url: req.url });
            if (spec.fail === 'next') return next(failure(spec));
            if (spec.fail === 'reject') throw failure(spec);
            await respondNode(spec, res);
          })();
          // Express 5 handles the rejection itself; Express 4 never sees it.
          if (spec.fail === 'reject') return work;
          work.catch(next);
          return undefined;
        });
      }
      app.use(router);
      return start(createServer(app));
    },
  };
}

function koaHarness(name: string, Koa: typeof Koa3 | typeof Koa2): Harness {
  return {
    name,
    features: new Set<Feature>(['throw', 'reject']),
    listen(routes, options, extra) {
      const app = new (Koa as typeof Koa3)();
      app.silent = true;
      const lateMount = extra?.lateMount;
      if (lateMount !== undefined) {
        app.use(async (ctx, next) => {
          lateMount();
          await closed(ctx.res);
          await next();
        });
      }
      app.use(koaDefer(options) as unknown as Koa3.Middleware);
      if (extra?.twice && extra.lostContext) app.use((_ctx, next) => loseContext(next));
      if (extra?.twice) app.use(koaDefer({ mode: 'parallel' }) as unknown as Koa3.Middleware);
      app.use(async (ctx) => {
        const spec = routes[ctx.path];
        if (spec === undefined) return;
        if (spec.fail === 'throw') {
          spec.run?.({ url: ctx.url });
          throw failure(spec);
        }
        if (spec.untilClosed !== undefined) {
          spec.untilClosed();
          await closed(ctx.res);
          void spec.run?.({ url: ctx.url });
          ctx.status = spec.status ?? 200;
          ctx.body = spec.body ?? 'ok';
          return;
        }
        await spec.run?.({ url: ctx.url });
        if (spec.fail === 'reject') throw failure(spec);
        if (spec.hold !== undefined) await spec.hold;
        ctx.status = spec.status ?? 200;
        if (spec.destroyAfterHeaders || spec.holdAfterHeaders !== undefined || spec.chunks !== undefined) {
          const body = new PassThrough();
          ctx.body = body;
          body.write('first');
          void (async () => {
            if (spec.destroyAfterHeaders) {
              // Let respond() pipe the first chunk, then kill the response.
              await new Promise((resolve) => ctx.res.once('pipe', resolve));
              setImmediate(() => ctx.res.destroy());
              return;
            }
            if (spec.holdAfterHeaders !== undefined) await spec.holdAfterHeaders;
            for (const chunk of spec.chunks ?? []) body.write(chunk);
            body.end(spec.body ?? 'ok');
          })();
          return;
        }
        ctx.body = spec.body ?? 'ok';
      });
      return start(createServer(app.callback()));
    },
  };
}

const nodeHarness: Harness = {
  name: 'node:http',
  features: new Set<Feature>(),
  listen(routes, options, extra) {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      const spec = routes[new URL(req.url ?? '/', 'http://x').pathname];
      if (spec === undefined) {
        res.statusCode = 404;
        res.end();
        return;
      }
      void (async () => {
        if (spec.untilClosed !== undefined) return respondAfterClose(spec, res, req.url ?? '/');
        await spec.run?.({ url: req.url ?? '/' });
        await respondNode(spec, res);
      })();
    };
    // With `twice`, the inner wrapper (parallel) must reuse the outer one's scope.
    let inner: (req: IncomingMessage, res: ServerResponse) => void = handler;
    if (extra?.twice) {
      const second = withDeferHandler(handler, { mode: 'parallel' });
      inner = extra.lostContext ? (req, res) => loseContext(second, req, res) : second;
    }
    const outer = withDeferHandler(inner, options);
    const lateMount = extra?.lateMount;
    if (lateMount === undefined) return start(createServer(outer));
    return start(
      createServer((req, res) => {
        lateMount();
        void closed(res).then(() => outer(req, res));
      }),
    );
  },
};

export const harnesses: Harness[] = [
  expressHarness('express 4', express4, ['throw', 'next']),
  expressHarness('express 5', express5, ['throw', 'next', 'reject']),
  koaHarness('koa 2', Koa2),
  koaHarness('koa 3', Koa3),
  nodeHarness,
];

export function harness(name: string): Harness {
  const found = harnesses.find((h) => h.name === name);
  if (found === undefined) throw new Error(`no harness ${name}`);
  return found;
}
