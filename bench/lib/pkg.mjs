// Loads the built package from the snapshot the runner took of dist/ (so a
// rebuild of dist/ by someone else in the shared tree during a run cannot
// break or change what is measured). Without the runner (a child script run
// by hand) it loads dist/ itself.
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const DIST = process.env.REQUEST_DEFER_BENCH_DIST ?? fileURLToPath(new URL('../../dist', import.meta.url));

/** import('request-defer') or a subpath ('express', 'koa', 'node', 'testing'). */
export function importPackage(subpath = 'index') {
  return import(pathToFileURL(join(DIST, `${subpath}.js`)).href);
}

export { DIST };
