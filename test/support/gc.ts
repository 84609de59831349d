import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** global.gc, exposed at run time when the worker was not started with --expose-gc. */
export function getGc(): (() => void) | undefined {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') return existing;
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}
