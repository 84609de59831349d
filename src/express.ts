import type { IncomingMessage, ServerResponse } from 'node:http';
import { runInResponseScope } from './core/http.js';
import { parseScopeOptions } from './options.js';
import type { DeferScopeOptions } from './types.js';

/** The `next` Express passes to a middleware. */
export type NextFunction = (error?: unknown) => void;

/** A request-defer middleware as Express 4 and 5 call it. */
export type DeferRequestHandler = (req: IncomingMessage, res: ServerResponse, next: NextFunction) => void;

/**
 * Express 4 and 5 middleware that opens a defer scope per request: every
 * `defer()` during the request runs after the response has been sent, when
 * its outcome allows. Options are validated once, here.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { defer } from 'request-defer';
 * import { deferMiddleware } from 'request-defer/express';
 *
 * const app = express();
 * app.use(deferMiddleware());
 * app.post('/signup', async (req, res) => {
 *   const user = await createUser(req.body);
 *   defer(() => sendWelcomeMail(user));
 *   res.status(201).json(user);
 * });
 * ```
 */
export function deferMiddleware(options?: Omit<DeferScopeOptions, 'await'>): DeferRequestHandler {
  const opts = parseScopeOptions(options, 'deferMiddleware() (request-defer/express)', false);
  return function requestDefer(req: IncomingMessage, res: ServerResponse, next: NextFunction): void {
    runInResponseScope(res, opts, next);
  };
}

export type { DeferScopeOptions } from './types.js';
