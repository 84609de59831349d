import { setImmediate as tick } from 'node:timers/promises';
import { drain, waitUntil, withDefer } from '../../src/index.js';

async function flushMetrics(): Promise<void> {
  await tick(); // stands for a network call
}

export async function main() {
  const reported: string[] = [];
  await withDefer(
    () => {
      waitUntil(flushMetrics()); // already started: no slot, no status check, never delays anything
      waitUntil(tick().then(() => Promise.reject(new Error('analytics down')))); // reported like a callback
    },
    { onError: (error, info) => void reported.push(`${info.phase}, name ${info.name}: ${(error as Error).message}`) },
  );
  const summary = await drain(); // waits for both promises
  return { summary, reported };
}
