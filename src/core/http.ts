import type { ServerResponse } from 'node:http';
import { closeResponseScope, Scope } from './engine.js';
import { S } from './state.js';
import type { ScopeOptions } from '../options.js';

/**
 * The one thing every HTTP adapter does: run `fn(a, b)` in a scope bound to
 * `res`, whose outcome is decided at the response's `'close'` (which follows
 * `'finish'` on success and comes alone on an abort). A second adapter on the
 * same response reuses the scope already open.
 * @internal
 */
export function runInResponseScope<A, B, R>(
  res: ServerResponse,
  opts: ScopeOptions,
  fn: (this: unknown, a: A, b: B) => R,
  thisArg: unknown,
  a: A,
  b: B,
): R {
  const frame = S.als.getStore();
  if (frame !== undefined && frame.scope.res === res) return fn.call(thisArg, a, b);
  const scope = new Scope(opts, undefined, res);
  res.on('close', () => closeResponseScope(scope));
  return S.als.run(scope, callWith, fn, thisArg, a, b);
}

function callWith<A, B, R>(fn: (this: unknown, a: A, b: B) => R, thisArg: unknown, a: A, b: B): R {
  return fn.call(thisArg, a, b);
}
