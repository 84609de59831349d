import type { ServerResponse } from 'node:http';
import { runInResponseScope } from './core/http.js';
import { parseScopeOptions } from './options.js';
import type { DeferScopeOptions } from './types.js';

/** The part of a Koa context the middleware uses. */
export interface KoaContextLike {
  res: ServerResponse;
}

/** A request-defer middleware as Koa 2 and 3 call it. */
export type DeferKoaMiddleware = (ctx: KoaContextLike, next: () => Promise<unknown>) => Promise<unknown>;

/**
 * Koa 2 and 3 middleware that opens a defer scope per request. The outcome
 * is read when the response closes, after Koa's own `respond()` and error
 * handling have set the final status.
 *
 * @example
 * ```ts
 * import Koa from 'koa';
 * import { defer } from 'request-defer';
 * import { deferMiddleware } from 'request-defer/koa';
 *
 * const app = new Koa();
 * app.use(deferMiddleware());
 * app.use(async (ctx) => {
 *   defer(() => analytics.track('visit', ctx.path));
 *   ctx.body = 'hello';
 * });
 * ```
 */
export function deferMiddleware(options?: Omit<DeferScopeOptions, 'await'>): DeferKoaMiddleware {
  const opts = parseScopeOptions(options, 'deferMiddleware() (request-defer/koa)', false);
  return function requestDefer(ctx: KoaContextLike, next: () => Promise<unknown>): Promise<unknown> {
    return runInResponseScope(ctx.res, opts, next);
  };
}

export type { DeferScopeOptions } from './types.js';
