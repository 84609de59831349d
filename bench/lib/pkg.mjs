// Loads the built package from the snapshot the runner took of dist/ (so a
// rebuild of dist/ by someone else in the shared tree during a run cannot
// break or change what is measured). Without the runner (a child script run
// by hand) it loads dist/ itself.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const DIST = process.env.REQUEST_DEFER_BENCH_DIST ?? fileURLToPath(new URL('../../dist', import.meta.url));

/** import('request-defer') or a subpath ('express', 'koa', 'node', 'testing'). */
export function importPackage(subpath = 'index') {
  return import(pathToFileURL(join(DIST, `${subpath}.js`)).href);
}

export { DIST };

/**
 * Copies the built dist/ of `root` to `target`, checks that the copy
 * imports, and points every child started from now on at it
 * (REQUEST_DEFER_BENCH_DIST), so a rebuild in the shared tree mid-run
 * changes nothing. Its bare imports (zod) still resolve from the project's
 * node_modules.
 */
export function snapshotDist(root, target) {
  rmSync(target, { recursive: true, force: true });
  mkdirSync(target, { recursive: true });
  cpSync(join(root, 'dist'), target, { recursive: true });
  const entries = ['index', 'express', 'koa', 'node'].map((e) => `await import(${JSON.stringify(join(target, `${e}.js`))});`).join(' ');
  execFileSync(process.execPath, ['--input-type=module', '-e', entries], { stdio: ['ignore', 'ignore', 'inherit'] });
  process.env.REQUEST_DEFER_BENCH_DIST = target;
  return target;
}
