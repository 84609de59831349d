import type { ServerResponse } from 'node:http';
import { closeResponseScope, Scope } from './engine.js';
import { S } from './state.js';
import type { ScopeOptions } from '../options.js';

/**
 * The one thing every HTTP adapter does: run `fn` in a scope bound to `res`,
 * whose outcome is decided at the response's `'close'` (which follows
 * `'finish'` on success and comes alone on an abort). A second adapter on the
 * same response reuses the scope already open.
 * @internal
 */
export function runInResponseScope<R>(res: ServerResponse, opts: ScopeOptions, fn: () => R): R {
  const scope = openResponseScope(res, opts);
  return scope === undefined ? fn() : S.als.run(scope, fn);
}

/** The same for a handler called with `this`, `req` and `res` (request-defer/node). @internal */
export function runHandlerInResponseScope<Req, Res extends ServerResponse, R>(
  handler: (this: unknown, req: Req, res: Res) => R,
  thisArg: unknown,
  req: Req,
  res: Res,
  opts: ScopeOptions,
): R {
  const scope = openResponseScope(res, opts);
  return scope === undefined ? handler.call(thisArg, req, res) : S.als.run(scope, callHandler, handler, thisArg, req, res);
}

function callHandler<Req, Res, R>(handler: (this: unknown, req: Req, res: Res) => R, thisArg: unknown, req: Req, res: Res): R {
  return handler.call(thisArg, req, res);
}

function openResponseScope(res: ServerResponse, opts: ScopeOptions): Scope | undefined {
  const frame = S.als.getStore();
  if (frame !== undefined && frame.scope.res === res) return undefined;
  const scope = new Scope(opts, undefined, res);
  // Mounted behind an async middleware (a session lookup) while the client
  // left: 'close' has already been emitted, so decide now (aborted).
  if (res.closed) closeResponseScope(scope);
  else res.on('close', () => closeResponseScope(scope));
  return scope;
}
