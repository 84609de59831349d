// Heap after many deferring scopes, run in a child process per Node version
// by bench/run.mjs:  node --expose-gc bench/memory.mjs '{"scopes":100000}'
// Prints one line `RESULT <json>`.
//
// `scopes` withDefer scopes (the body of a request: one defer() of an async
// no-op each), opened 1 000 at a time with an event-loop turn between
// batches, so callbacks queue behind the scheduler's 16 slots as they would
// under load. Heap (after two full GCs)
// is taken at baseline (library loaded and warmed up, nothing pending),
// right after the last scope (work still pending), and after drain() + GC.
import { setImmediate as turn } from 'node:timers/promises';
import { importPackage } from './lib/pkg.mjs';

const { configureDefer, defer, deferStats, drain, withDefer } = await importPackage();

const { scopes = 100_000 } = JSON.parse(process.argv[2] ?? '{}');
const BATCH = 1000;
const gc = globalThis.gc;
if (typeof gc !== 'function') throw new Error('run with --expose-gc');
const heap = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};

let errors = 0;
configureDefer({ onError: () => void errors++ });

const work = async () => {};
const body = () => {
  defer(work);
};

async function batch(n) {
  const all = new Array(n);
  for (let i = 0; i < n; i++) all[i] = withDefer(body);
  await Promise.all(all);
  await turn(); // one event-loop turn between batches, as requests arriving over I/O give
}

// Warm up the code paths so baseline includes compiled code, not just the import.
for (let i = 0; i < 10; i++) await batch(BATCH);
await drain();
const baseline = heap();

const t0 = performance.now();
for (let done = 0; done < scopes; done += BATCH) await batch(Math.min(BATCH, scopes - done));
const openMs = performance.now() - t0;
const pendingStats = deferStats();
const afterScopes = heap();
const summary = await drain();
const totalMs = performance.now() - t0;
const afterDrain = heap();

process.stdout.write(
  `RESULT ${JSON.stringify({
    node: process.version,
    scopes,
    baseline,
    afterScopes,
    afterDrain,
    pendingAtEnd: pendingStats.queued + pendingStats.running,
    summary,
    stats: deferStats(),
    errors,
    openMs,
    totalMs,
  })}\n`,
);
