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

/** The name of the 'close' listener that carries a response's scope (the same in every copy). */
const CLOSE_LISTENER = 'requestDeferResponseClose';

function openResponseScope(res: ServerResponse, opts: ScopeOptions): Scope | undefined {
  const frame = S.als.getStore();
  if (frame !== undefined && frame.scope.res === res) return undefined;
  // A second adapter whose async context was lost on the way (a body reader
  // that calls next() from a stream event): the response still knows its scope.
  if (typeof res.listenerCount === 'function' && res.listenerCount('close') > 0) {
    const open = scopeOf(res);
    if (open !== undefined) return open;
  }
  const scope = new Scope(opts, undefined, res);
  if (res.closed) {
    // Mounted behind an async middleware (a session lookup) while the client
    // left: 'close' has already been emitted, so decide now (aborted).
    closeResponseScope(scope);
    return scope;
  }
  res.on('close', closeListener(scope));
  // A pipelined response queued behind another has no socket yet, and if the
  // connection dies first Node never emits its 'close': watch the socket.
  if (res.socket === null) watchQueued(res, scope);
  return scope;
}

/**
 * The response's 'close' listener. While `S.probe` is set it reports its
 * scope instead of closing it: a property on each listener would cost every
 * request a store on a fresh function object, and the lookup is rare.
 */
function closeListener(scope: Scope): () => void {
  return function requestDeferResponseClose(): void {
    const probe = S.probe;
    if (probe !== undefined) probe.scope = scope;
    else closeResponseScope(scope);
  };
}

function scopeOf(res: ServerResponse): Scope | undefined {
  for (const listener of res.rawListeners('close')) {
    let ours = false;
    try {
      ours = typeof listener === 'function' && listener.name === CLOSE_LISTENER;
    } catch {
      // a user's listener with a throwing name getter is not ours
    }
    if (!ours) continue;
    const probe: { scope: Scope | undefined } = { scope: undefined };
    S.probe = probe;
    try {
      (listener as () => void)();
    } finally {
      S.probe = undefined;
    }
    if (probe.scope !== undefined) return probe.scope;
  }
  return undefined;
}

function watchQueued(res: ServerResponse, scope: Scope): void {
  const socket = res.req?.socket;
  if (socket === undefined || socket === null) return;
  if (socket.destroyed) {
    closeResponseScope(scope);
    return;
  }
  const onSocketClose = () => closeResponseScope(scope);
  socket.once('close', onSocketClose);
  res.once('close', () => socket.removeListener('close', onSocketClose));
}
