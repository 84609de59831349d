import type { IncomingMessage, ServerResponse } from 'node:http';
import { runHandlerInResponseScope } from './core/http.js';
import { invalidCallbackError } from './errors.js';
import { parseScopeOptions } from './options.js';
import type { DeferScopeOptions } from './types.js';

/**
 * Wraps a plain `node:http` request handler so each request opens a defer
 * scope. The wrapper behaves exactly like the handler: same `this`, same
 * return value, and it catches nothing.
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import { defer } from 'request-defer';
 * import { withDeferHandler } from 'request-defer/node';
 *
 * createServer(withDeferHandler((req, res) => {
 *   defer(() => console.log('sent', req.url));
 *   res.end('ok');
 * })).listen(3000);
 * ```
 */
export function withDeferHandler<Req extends IncomingMessage, Res extends ServerResponse, R>(
  handler: (req: Req, res: Res) => R,
  options?: Omit<DeferScopeOptions, 'await'>,
): (req: Req, res: Res) => R {
  if (typeof handler !== 'function') {
    throw invalidCallbackError('withDeferHandler() (request-defer/node)', 'a (req, res) request handler', handler);
  }
  const opts = parseScopeOptions(options, 'withDeferHandler() (request-defer/node)', false);
  return function requestDeferHandler(this: unknown, req: Req, res: Res): R {
    return runHandlerInResponseScope(handler as (this: unknown, req: Req, res: Res) => R, this, req, res, opts);
  };
}

export type { DeferScopeOptions } from './types.js';
