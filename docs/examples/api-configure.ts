import { setImmediate as tick } from 'node:timers/promises';
import { configureDefer, defer, DeferError, deferStats, withDefer } from '../../src/index.js';

export async function main() {
  const refused: string[] = [];
  const before = deferStats();
  configureDefer({
    concurrency: 1, // one callback runs at a time in the process
    maxQueued: 1, // one more may wait; the next one is refused
    onError: (error, info) => {
      if (error instanceof DeferError) refused.push(`${error.code}: ${info.name} (${info.phase})`);
    },
  });
  try {
    await withDefer(
      () => {
        for (const name of ['a', 'b', 'c']) defer(() => tick(), { name });
      },
      { mode: 'parallel', await: true },
    );
  } finally {
    // A key given as undefined restores its default (16, 10 000, stderr).
    configureDefer({ concurrency: undefined, maxQueued: undefined, onError: undefined });
  }
  const after = deferStats();
  return { refused, completed: after.completed - before.completed, dropped: after.dropped - before.dropped };
}
