import { setImmediate as tick } from 'node:timers/promises';
import { defer, withDefer } from '../../src/index.js';

async function run(mode: 'sequential' | 'parallel') {
  const log: string[] = [];
  const errors: string[] = [];
  const step = (name: string) => async () => {
    log.push(`${name} start`);
    await tick();
    log.push(`${name} end`);
  };
  await withDefer(
    () => {
      defer(step('a'));
      defer(() => {
        throw new Error('b failed'); // reported; a and c are not affected
      });
      defer(step('c'));
    },
    { mode, await: true, onError: (error) => void errors.push((error as Error).message) },
  );
  return { log, errors };
}

export async function main() {
  return { sequential: await run('sequential'), parallel: await run('parallel') };
}
