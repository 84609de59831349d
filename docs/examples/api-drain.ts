import { setImmediate as tick } from 'node:timers/promises';
import { defer, drain, withDefer } from '../../src/index.js';

export async function main() {
  const reported: string[] = [];
  await withDefer(
    () => {
      defer(() => tick(), { name: 'quick' });
      // Ignores its deadline: only the drain timeout ends it.
      defer(() => new Promise(() => {}), { name: 'stuck' });
    },
    { mode: 'parallel', onError: (error, info) => void reported.push(`${info.phase}: ${info.name}`) },
  );
  // Shutdown: wait up to 5 s, then abandon what is left (reported, signal aborted).
  const summary = await drain({ timeout: 5_000 });
  return { summary, reported };
}
