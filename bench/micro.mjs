// Micro-benchmarks (tinybench), run in a child process per Node version by
// bench/run.mjs:  node bench/micro.mjs '{"quick":false}'
// Prints one line `RESULT <json>`.
//
// - defer(): median cost of one call inside a scope (batches of 100 calls in
//   a fresh withDefer scope, timed around the calls only; a sample is the
//   batch mean), with `{ name }` (the zod-validated path) and the floor's
//   `als.getStore().push(fn)` beside it.
// - request lifecycle without the network: ns per request that each
//   throughput variant's middleware adds (bare, floor, hand-rolled,
//   request-defer with and without a defer()).
// - scheduler: one withDefer scope running N no-op async callbacks
//   (`{ await: true }`, registration included) vs a bare
//   `for (const fn of fns) await fn()` loop (measured in this process after
//   the library's ALS is enabled, and once before: `barePristine`), vs the
//   same loop inside one withDefer scope, vs @poppinss/defer's
//   DeferQueue (default concurrency 10). Tasks interleaved over 3 rounds.
// - linear growth: one scope with 10 000 vs 100 000 callbacks, unnamed and
//   named (unique names), equal total work per size, with and without GC
//   pauses, against three controls (floor, context restore, Map by name).
import { AsyncLocalStorage, AsyncResource } from 'node:async_hooks';
import { PerformanceObserver } from 'node:perf_hooks';
import { EventEmitter } from 'node:events';
import { Bench } from 'tinybench';
import { importPackage } from './lib/pkg.mjs';
import { DeferQueue } from '@poppinss/defer';
import onFinished from 'on-finished';

const { defer, withDefer } = await importPackage();
const { deferMiddleware } = await importPackage('express');
const { deferMiddleware: deferKoaMiddleware } = await importPackage('koa');
const { quick = false, only, schedTasks } = JSON.parse(process.argv[2] ?? '{}');
// `only`: the sections to run (default all). The runner repeats the scheduler
// section in fresh processes: one process's JIT can land in a slow or a fast
// mode for the whole run, so a single process is one sample, not a result.
const want = (name) => only === undefined || only.includes(name);
const noop = () => {};
const asyncFns = (n) => Array.from({ length: n }, () => async () => {});

const result = { node: process.version, execArgv: process.execArgv, sectionMs: {} };
let sectionStart = performance.now();
const section = (name) => {
  const now = performance.now();
  result.sectionMs[name] = Math.round(now - sectionStart);
  sectionStart = now;
};

// ---------------------------------------------------------------------------
// Scheduler baselines, set up first
const N = 10_000;
const fns = asyncFns(N);
const bareLoop = async () => {
  for (const fn of fns) await fn();
};
const median = (xs) => xs.slice().sort((x, y) => x - y)[xs.length >> 1];
const schedBench = () => new Bench({ time: quick ? 80 : 150, warmupTime: quick ? 30 : 50, iterations: quick ? 3 : 5, warmupIterations: 2 });

// The bare loop before any AsyncLocalStorage is enabled in this process
// (on Node 20/22 an enabled ALS makes every promise pay an async_hooks hook;
// on 24+ it costs nothing).
{
  const bench = schedBench();
  bench.add('pristine', bareLoop);
  await bench.run();
  result.barePristineMs = bench.tasks[0].result.latency.p50;
}
section('pristine loop');

// Enable the library's AsyncLocalStorage (the first scope does): from here on
// every task runs under the conditions of a process that uses request-defer.
await withDefer(() => defer(noop), { await: true });

// ---------------------------------------------------------------------------
// defer() call cost
if (want('defer')) {
  const B = 100;
  const als = new AsyncLocalStorage();
  const bench = new Bench({ time: quick ? 100 : 250, warmupTime: quick ? 50 : 100, iterations: 64 });
  const batch = (register) => async () => {
    let elapsed = 0;
    const t0 = bench.now();
    await withDefer(() => {
      const a = bench.now();
      for (let i = 0; i < B; i++) register();
      elapsed = bench.now() - a;
    });
    return { overriddenDuration: elapsed / B, overriddenIterationCost: bench.now() - t0 };
  };
  bench.add('defer', batch(() => defer(noop)));
  bench.add('deferNamed', batch(() => defer(noop, { name: 'x' })));
  bench.add('floorPush', async () => {
    let elapsed = 0;
    const t0 = bench.now();
    als.run([], () => {
      const a = bench.now();
      for (let i = 0; i < B; i++) als.getStore().push(noop);
      elapsed = bench.now() - a;
    });
    return { overriddenDuration: elapsed / B, overriddenIterationCost: bench.now() - t0 };
  });
  await bench.run();
  result.deferCost = Object.fromEntries(
    bench.tasks.map((t) => [t.name, { medianNs: t.result.latency.p50 * 1e6, meanNs: t.result.latency.mean * 1e6, samples: t.result.latency.samplesCount }]),
  );
}
section('defer cost');

// ---------------------------------------------------------------------------
// Request lifecycle without the network: what each middleware adds to one
// request, measured in-process (far less noisy than req/s on a shared
// machine). A response stand-in (an EventEmitter with the fields the
// middlewares read) goes through middleware -> handler -> 'finish' ->
// 'close', the handler deferring one no-op, as the HTTP throughput variants do.
// Variants interleaved over rounds (rotated order), median of the rounds.
if (want('lifecycle')) {
  const B = 100;
  class FakeResponse extends EventEmitter {
    statusCode = 200;
    headersSent = false;
    finished = false;
    writableFinished = false;
    socket = null;
    end() {
      this.headersSent = true;
      this.finished = true;
      this.writableFinished = true;
      this.emit('finish');
      this.emit('close');
    }
  }
  const req = {};
  const floorAls = new AsyncLocalStorage();
  const rdMw = deferMiddleware();
  const rdKoaMw = deferKoaMiddleware();
  const done = Promise.resolve();
  const variants = {
    bare: () => {
      const res = new FakeResponse();
      res.end();
    },
    floor: () => {
      const res = new FakeResponse();
      const fns = [];
      res.once('close', () => {
        for (const fn of fns) fn();
      });
      floorAls.run(fns, () => {
        floorAls.getStore().push(noop);
        res.end();
      });
    },
    hand: () => {
      const res = new FakeResponse();
      const fns = [];
      req.deferred = fns;
      onFinished(res, () => {
        for (const fn of fns) fn();
      });
      req.deferred.push(noop);
      res.end();
    },
    rd: () => {
      const res = new FakeResponse();
      rdMw(req, res, () => {
        defer(noop);
        res.end();
      });
    },
    rdIdle: () => {
      const res = new FakeResponse();
      rdMw(req, res, () => res.end());
    },
    // Koa's shape: middleware(ctx, next), next() returns a promise.
    floorKoa: () => {
      const res = new FakeResponse();
      const ctx = { res };
      const fns = [];
      res.once('close', () => {
        for (const fn of fns) fn();
      });
      return floorAls.run(fns, () => {
        floorAls.getStore().push(noop);
        ctx.res.end();
        return done;
      });
    },
    rdKoa: () => {
      const res = new FakeResponse();
      const ctx = { res };
      return rdKoaMw(ctx, () => {
        defer(noop);
        ctx.res.end();
        return done;
      });
    },
  };
  const names = Object.keys(variants);
  const perRound = Object.fromEntries(names.map((k) => [k, []]));
  const rounds = quick ? 1 : 3;
  for (let round = 0; round < rounds; round++) {
    const bench = new Bench({ time: quick ? 80 : 120, warmupTime: quick ? 40 : 40, iterations: 64 });
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + round) % names.length];
      const one = variants[name];
      bench.add(name, () => {
        const t0 = bench.now();
        for (let j = 0; j < B; j++) one();
        const elapsed = bench.now() - t0;
        return { overriddenDuration: elapsed / B, overriddenIterationCost: elapsed };
      });
    }
    await bench.run();
    // on-finished reports on the next tick: let it settle before moving on
    await new Promise((resolve) => setImmediate(resolve));
    for (const t of bench.tasks) perRound[t.name].push(t.result.latency.p50 * 1e6);
  }
  result.lifecycle = Object.fromEntries(names.map((k) => [k, { medianNs: median(perRound[k]), rounds: perRound[k].map(Math.round) }]));
}
section('lifecycle');

// ---------------------------------------------------------------------------
// Scheduler throughput
if (want('scheduler')) {
  // request-defer's AsyncLocalStorage (internal: its shared state), for the minimal-engine control's scope lookup.
  const rdAls = globalThis[Symbol.for('request-defer')]?.als;
  if (typeof rdAls?.getStore !== 'function') {
    throw new Error("micro.mjs: request-defer's shared state (globalThis[Symbol.for('request-defer')].als) is not where the minimal-engine control expects it; update the control");
  }
  const queue = new DeferQueue();
  const minimalCounts = { completed: 0, failed: 0 };
  // The controls run inside a withDefer scope, i.e. in request-defer's own
  // AsyncLocalStorage, not in one of their own, so each scheduler process of
  // the runner (which runs this section alone) has exactly one enabled, as
  // an app using request-defer does: on Node 20 and
  // 22 each enabled AsyncLocalStorage adds its own work to every promise of
  // the process (a second one slowed the bare loop from 1.38 to 2.19 ms per
  // 10 000 on Node 20, 1.40 to 2.09 on Node 22).
  const tasks = {
    bare: bareLoop,
    alsLoop: () => withDefer(bareLoop),
    // What any implementation of SPEC semantic 11 pays per callback and no more: capture the
    // async context at registration (an AsyncResource), restore it to run the callback.
    restore: () =>
      withDefer(async () => {
        const resources = fns.map(() => new AsyncResource('bench'));
        for (let i = 0; i < fns.length; i++) await resources[i].runInAsyncScope(fns[i]);
      }),
    // The least a correct engine does: a record per callback (what it runs,
    // its scope, its captured context, its state, for drain and abandonment
    // to report by name), the scope found through AsyncLocalStorage as a
    // defer() without arguments must (the same store request-defer reads:
    // its own, reached through its process-wide state), each callback run in
    // its captured context, failures caught and counted, the record
    // released, and a setImmediate turn every 1 000 callbacks (SPEC: an
    // invocation yields at least every ~10 ms or 1 000 callbacks; 10 000
    // no-op callbacks take well under 10 ms, so the count decides). No
    // slots, timeouts, ordering rules, nesting, tracing, clock.
    minimal: () =>
      withDefer(async () => {
        const records = [];
        for (const fn of fns) records.push({ fn, scope: rdAls.getStore(), resource: new AsyncResource('bench'), state: 0 });
        for (let i = 0; i < records.length; i++) {
          if (i > 0 && i % 1000 === 0) await new Promise((resolve) => setImmediate(resolve));
          const r = records[i];
          r.state = 1;
          try {
            await r.resource.runInAsyncScope(r.fn);
            minimalCounts.completed++;
          } catch {
            minimalCounts.failed++;
          }
          r.state = 2;
          records[i] = undefined;
        }
      }),
    rd: () =>
      withDefer(
        () => {
          for (const fn of fns) defer(fn);
        },
        { await: true },
      ),
    poppinss: () =>
      new Promise((resolve) => {
        queue.drained = resolve;
        for (const fn of fns) queue.push(fn);
      }),
  };
  // `schedTasks`: the tasks measured in this process, beside the bare loop
  // (default: all of them). The runner measures each task in processes of its
  // own: tasks sharing a process slowed each other down through Node's
  // shared async_hooks code (on Node 20 the bare loop itself ran 1.45 ms per
  // 10 000 alone with request-defer's scope and 2.1 ms once the
  // minimal-engine control had run in the same process: the control's own
  // AsyncLocalStorage of the time, see above), and fresh processes are
  // samples of the machine's drift.
  const names = schedTasks === undefined ? Object.keys(tasks) : ['bare', ...schedTasks.filter((k) => k !== 'bare')];
  for (const k of names) if (tasks[k] === undefined) throw new Error(`micro.mjs: unknown scheduler task ${k}`);
  const perRound = Object.fromEntries(names.map((k) => [k, []]));
  const rounds = quick ? 1 : 3;
  for (let round = 0; round < rounds; round++) {
    const bench = schedBench();
    for (let i = 0; i < names.length; i++) {
      const k = names[(i + round) % names.length];
      bench.add(k, tasks[k]);
    }
    await bench.run();
    for (const t of bench.tasks) perRound[t.name].push(t.result.latency.p50);
  }
  const ms = Object.fromEntries(names.map((k) => [k, median(perRound[k])]));
  ms.barePristine = result.barePristineMs;
  result.scheduler = {
    n: N,
    rounds,
    ms,
    callsPerSec: Object.fromEntries(Object.entries(ms).map(([k, v]) => [k, N / (v / 1000)])),
  };
}
section('scheduler');

// ---------------------------------------------------------------------------
// Linear growth: one scope with 10 000 vs 100 000 callbacks. Equal work on
// both sides: 300 000 callbacks per sample (30 scopes of 10 000 against 3 of
// 100 000), so each size pays its own share of garbage collection; 3
// interleaved rounds, medians. Time is also reported without the GC pauses
// seen by a PerformanceObserver ('gc' entries): holding 100 000 pending
// callbacks makes each scavenge copy ten times more live objects, a cost of
// the live set, not of the algorithm. Controls: the floor (an array of
// closures, nothing allocated per callback), "restore" (what semantic 11
// retains per callback: an AsyncResource, restored to run it) and "map" (a
// Map keyed by name, get + set per registration, get + delete per start:
// the bookkeeping any named-replacement rule needs).
if (want('linear')) {
  const sizes = [10_000, 100_000];
  const TOTAL = quick ? 200_000 : 300_000;
  const fns = asyncFns(100_000);
  const names = Array.from({ length: 100_000 }, (_, i) => `job-${i}`);
  const als = new AsyncLocalStorage();
  const gcs = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push(e);
  });
  observer.observe({ entryTypes: ['gc'] });
  const gcWithin = (t0, t1) => gcs.reduce((sum, e) => (e.startTime >= t0 && e.startTime < t1 ? sum + e.duration : sum), 0);
  const cases = {
    unnamed: (n) =>
      withDefer(
        () => {
          for (let i = 0; i < n; i++) defer(fns[i]);
        },
        { await: true },
      ),
    named: (n) =>
      withDefer(
        () => {
          for (let i = 0; i < n; i++) defer(fns[i], { name: names[i] });
        },
        { await: true },
      ),
    floor: (n) =>
      als.run([], async () => {
        const list = als.getStore();
        for (let i = 0; i < n; i++) list.push(fns[i]);
        for (const fn of list) await fn();
      }),
    restore: (n) =>
      als.run([], async () => {
        const list = als.getStore();
        for (let i = 0; i < n; i++) list.push(new AsyncResource('bench'));
        for (let i = 0; i < n; i++) await list[i].runInAsyncScope(fns[i]);
      }),
    map: async (n) => {
      const map = new Map();
      const held = [];
      for (let i = 0; i < n; i++) {
        const entry = { fn: fns[i] };
        map.get(names[i]);
        map.set(names[i], entry);
        held.push(entry);
      }
      for (let i = 0; i < n; i++) if (map.get(names[i]) === held[i]) map.delete(names[i]);
    },
  };
  const tick = () => new Promise((resolve) => setImmediate(resolve));
  const rounds = quick ? 1 : 3;
  const samples = {};
  const kinds = Object.keys(cases);
  for (const kind of kinds) {
    for (let i = 0; i < 3; i++) await cases[kind](10_000); // warm-up
    await cases[kind](100_000);
  }
  // Rounds outermost, kinds rotated and sizes alternated inside each, so a
  // slow stretch of the machine does not land on one kind or one size.
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < kinds.length; k++) {
      const kind = kinds[(k + round) % kinds.length];
      const order = (k + round) % 2 === 0 ? sizes : [...sizes].reverse();
      for (const n of order) {
        const scopes = TOTAL / n;
        const t0 = performance.now();
        for (let i = 0; i < scopes; i++) await cases[kind](n);
        const t1 = performance.now();
        await tick(); // gc entries are delivered asynchronously
        await tick();
        const gc = gcWithin(t0, t1);
        const sample = (samples[`${kind} ${n}`] ??= { ms: [], mutatorMs: [] });
        sample.ms.push((t1 - t0) / scopes);
        sample.mutatorMs.push((t1 - t0 - gc) / scopes);
      }
    }
  }
  observer.disconnect();
  const ms = {};
  const mutatorMs = {};
  for (const [k, v] of Object.entries(samples)) {
    ms[k] = median(v.ms);
    mutatorMs[k] = median(v.mutatorMs);
  }
  const ratios = (table) => Object.fromEntries(Object.keys(cases).map((kind) => [kind, table[`${kind} 100000`] / table[`${kind} 10000`]]));
  result.linear = { total: TOTAL, rounds, ms, mutatorMs, ratio: ratios(ms), mutatorRatio: ratios(mutatorMs) };
}
section('linear');

process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
