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
//   same loop inside one AsyncLocalStorage.run, vs @poppinss/defer's
//   DeferQueue (default concurrency 10). Tasks interleaved over 3 rounds.
// - linear growth: one scope with 10 000 vs 100 000 callbacks, unnamed and
//   named (unique names), mean time per scope, with the floor as control.
import { AsyncLocalStorage, AsyncResource } from 'node:async_hooks';
import { EventEmitter } from 'node:events';
import { Bench } from 'tinybench';
import { importPackage } from './lib/pkg.mjs';
import { DeferQueue } from '@poppinss/defer';
import onFinished from 'on-finished';

const { defer, withDefer } = await importPackage();
const { deferMiddleware } = await importPackage('express');
const { quick = false } = JSON.parse(process.argv[2] ?? '{}');
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
{
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
{
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
  };
  const bench = new Bench({ time: quick ? 80 : 200, warmupTime: quick ? 40 : 60, iterations: 64 });
  for (const [name, one] of Object.entries(variants)) {
    bench.add(name, () => {
      const t0 = bench.now();
      for (let i = 0; i < B; i++) one();
      const elapsed = bench.now() - t0;
      return { overriddenDuration: elapsed / B, overriddenIterationCost: elapsed };
    });
  }
  await bench.run();
  // on-finished reports on the next tick: let it settle before moving on
  await new Promise((resolve) => setImmediate(resolve));
  result.lifecycle = Object.fromEntries(bench.tasks.map((t) => [t.name, { medianNs: t.result.latency.p50 * 1e6 }]));
}
section('lifecycle');

// ---------------------------------------------------------------------------
// Scheduler throughput
{
  const als = new AsyncLocalStorage();
  const queue = new DeferQueue();
  const tasks = {
    bare: bareLoop,
    alsLoop: () => als.run({}, bareLoop),
    // What any implementation of SPEC semantic 11 pays per callback and no more: capture the
    // async context at registration (an AsyncResource), restore it to run the callback.
    restore: () =>
      als.run({}, async () => {
        const resources = fns.map(() => new AsyncResource('bench'));
        for (let i = 0; i < fns.length; i++) await resources[i].runInAsyncScope(fns[i]);
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
  const names = Object.keys(tasks);
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
// Linear growth. Cost per scope is the MEAN time (GC included: holding
// 100 000 callbacks is part of the cost), measured after warm-up. The
// floor (ALS.run + array push + sequential await) is the control: what the
// engine alone does when the live set grows tenfold.
{
  const sizes = [10_000, 100_000];
  const fns = asyncFns(100_000);
  const names = Array.from({ length: 100_000 }, (_, i) => `job-${i}`);
  const als = new AsyncLocalStorage();
  const cases = {
    unnamed: (n) => () =>
      withDefer(
        () => {
          for (let i = 0; i < n; i++) defer(fns[i]);
        },
        { await: true },
      ),
    named: (n) => () =>
      withDefer(
        () => {
          for (let i = 0; i < n; i++) defer(fns[i], { name: names[i] });
        },
        { await: true },
      ),
    floor: (n) => () =>
      als.run([], async () => {
        const list = als.getStore();
        for (let i = 0; i < n; i++) list.push(fns[i]);
        for (const fn of list) await fn();
      }),
  };
  const ms = {};
  for (const n of sizes) {
    const bench = new Bench({
      time: 0,
      warmupTime: 0,
      iterations: n === 10_000 ? (quick ? 5 : 12) : quick ? 1 : 2,
      warmupIterations: n === 10_000 ? 2 : 1,
    });
    for (const [kind, make] of Object.entries(cases)) bench.add(`${kind} ${n}`, make(n));
    await bench.run();
    for (const t of bench.tasks) ms[t.name] = t.result.latency.mean;
  }
  result.linear = {
    ms,
    unnamedRatio: ms['unnamed 100000'] / ms['unnamed 10000'],
    namedRatio: ms['named 100000'] / ms['named 10000'],
    floorRatio: ms['floor 100000'] / ms['floor 10000'],
  };
}
section('linear');

process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
