// The playground on Koa 3.
import { Readable } from 'node:stream';
import Koa from 'koa';
import { deferStats } from 'request-defer';
import { deferMiddleware } from 'request-defer/koa';
import { errorBody, provisioning, signupRoutes, slowRoute } from '../lib/demo.mjs';
import { readJson, serveStatic } from '../lib/http.mjs';
import { handleEvents, trackRequest } from '../lib/timeline.mjs';
import { signUp } from '../services/signup-service.mjs';

export function createKoaApp() {
  const app = new Koa();

  // The page, its event stream and a health endpoint: outside any defer scope.
  app.use(async (ctx, next) => {
    if (ctx.method === 'GET' && ctx.path === '/events') {
      ctx.respond = false;
      handleEvents(ctx.req, ctx.res);
      return;
    }
    if (ctx.method === 'GET' && ctx.path === '/stats') {
      ctx.body = deferStats();
      return;
    }
    if (await serveStatic(ctx.req, ctx.res)) {
      ctx.respond = false;
      return;
    }
    if (!ctx.path.startsWith('/api/')) return;
    // The API: timeline tracking first, then request-defer, then the routes.
    await trackRequest(ctx.req, ctx.res, { path: ctx.url, label: ctx.get('x-demo') || undefined }, next);
  });
  app.use(deferMiddleware());

  // Errors become JSON here; request-defer reads the status when the
  // response finishes, after this middleware has set it.
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (error) {
      if ((error.status ?? 500) >= 500) console.error(`[${ctx.response.get('x-request-id')}] ${error.message}`);
      ctx.status = error.status ?? 500;
      ctx.body = errorBody(error);
    }
  });

  app.use(async (ctx) => {
    if (ctx.method !== 'POST') return;
    const simulate = signupRoutes[ctx.path];
    if (simulate !== undefined) {
      const user = await signUp(await readJson(ctx.req), simulate);
      ctx.status = 201;
      ctx.body = { user };
    } else if (ctx.path === slowRoute) {
      const user = await signUp(await readJson(ctx.req));
      ctx.type = 'text/plain';
      ctx.body = Readable.from(provisioning(user, () => ctx.res.destroyed));
    }
  });
  return app;
}
