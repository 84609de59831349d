import { setImmediate as tick } from 'node:timers/promises';
import { defer, drain, withDefer, type Outcome } from '../../src/index.js';

export async function main() {
  const log: string[] = [];

  // Without { await: true }: settles once fn settled and its callbacks were handed over.
  const value = await withDefer(async () => {
    defer(async () => {
      await tick();
      log.push('deferred work done');
    });
    return 42;
  });
  log.push(`withDefer resolved with ${value}`);
  await drain();

  // fn's failure is rethrown unchanged, and is the scope's outcome.
  let outcome: Outcome | undefined;
  const failure = new Error('import failed');
  const rejection = await withDefer(() => {
    defer((context) => void (outcome = context.outcome)).always();
    throw failure;
  }).catch((error: unknown) => error);
  return { log, sameError: rejection === failure, outcome };
}
