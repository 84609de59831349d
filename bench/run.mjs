#!/usr/bin/env node
// npm run bench [-- --quick] [-- --node 20,22,24,26] [-- --only throughput,latency,...] [-- --profile]
//
// Side-by-side benchmarks of request-defer (the BUILT package in dist/)
// against a bare app, the floor of its design, a hand-rolled on-finished
// baseline and @poppinss/defer, on every supported Node version. See
// docs/benchmarks.md for the method and how to read the output.
//
// Exit status: 0 when the harness ran (missed performance targets are
// printed as MISSED lines but never fail the run), 1 when the harness
// itself broke (a server would not start, a child crashed, requests failed).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getJSON, load, loadWithCpu, median, pause, percentile, pool, rotate, runProblem, startServer } from './lib/load.mjs';
import { pinPlan } from './lib/pin.mjs';
import { snapshotDist } from './lib/pkg.mjs';
import { nodeVersion, resolveNode } from './lib/nodes.mjs';
import { revision } from './lib/revision.mjs';
import { evaluateTargets, renderMarkdown, renderSvg, renderText } from './lib/report.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BENCH = join(ROOT, 'bench');
const T0 = performance.now();

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    node: { type: 'string' },
    only: { type: 'string' },
    out: { type: 'string' },
    profile: { type: 'boolean', default: false },
    build: { type: 'boolean', default: false },
    render: { type: 'string' },
    variants: { type: 'string' },
    rounds: { type: 'string' },
    duration: { type: 'string' },
    'no-pin': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  process.stdout.write(`npm run bench -- [--quick] [--node 20,22,24,26] [--only suites] [--out dir] [--profile]
  --quick    one Node (the one running this script), short rounds, < 60 s; writes to bench/.raw/quick/
  --node     Node majors to measure (default 20,22,24,26; with --quick the current one)
  --only     comma list of suites: throughput,latency,overload,micro,memory,promises
  --out      output directory (default bench/ for a complete default run, bench/.raw/partial/
             when --node, --only, --variants, --rounds, --duration, --profile or --no-pin is given)
  --build    run npm run build first when dist/ is older than src/ (default: warn only,
             since the working tree is shared and src/ may be mid-edit; a missing dist/ is always built)
  --render F re-render the tables, results.md and chart.svg from a saved results.json (no measuring)
  --profile  run the throughput servers with --cpu-prof into bench/.raw/profiles/
             (summarise one with: node bench/profile-summary.mjs FILE.cpuprofile)
  --variants throughput variants to run (default: bare,floor-aa,hand,floor,poppinss,rd; also rd-idle, floor-lib)
  --no-pin   do not pin the servers and the load generator to separate CPUs
  --rounds N, --duration S   override the throughput rounds and seconds per round (A/B runs)
`);
  process.exit(0);
}

const QUICK = args.quick;
const SUITES = ['throughput', 'latency', 'overload', 'micro', 'memory', 'promises'];
const only = args.only ? args.only.split(',').map((s) => s.trim()) : SUITES;
for (const s of only) if (!SUITES.includes(s)) fail(`unknown suite "${s}" (known: ${SUITES.join(', ')})`);
const majors = args.node
  ? args.node.split(',').map((s) => s.trim())
  : QUICK
    ? [process.versions.node.split('.')[0]]
    : ['20', '22', '24', '26'];
let PIN; // set by main(): see pinPlan()
// Only a complete default run replaces the committed results: a quick or
// partial one (chosen Node versions, suites, variants, rounds or duration,
// or changed measuring conditions: --profile, --no-pin) writes under bench/.raw/.
const PARTIAL = Boolean(args.node || args.only || args.variants || args.rounds || args.duration || args.profile || args['no-pin']);
const OUT = args.out ? resolve(process.cwd(), args.out) : QUICK ? join(BENCH, '.raw', 'quick') : PARTIAL ? join(BENCH, '.raw', 'partial') : BENCH;
const RAW = join(BENCH, '.raw');
const PROFILES = join(RAW, 'profiles');

/** Durations in seconds. The full plan fits in < 10 minutes on 2 cores for 4 Node versions. */
const PLAN = QUICK
  ? {
      connections: 50,
      throughput: { rounds: 1, warm: 0.3, duration: 0.6 },
      latency: { rounds: 1, warm: 0.3, duration: 0.8, rate: 500 },
      overload: { warm: 0.3, duration: 1, rate: 2000, concurrency: 4, maxQueued: 200 },
      memory: { scopes: 10_000 },
    }
  : {
      connections: 50,
      throughput: { rounds: 3, warm: 0.5, duration: 1 },
      latency: { rounds: 3, warm: 0.4, duration: 1, rate: 1000 },
      overload: { warm: 0.5, duration: 3, rate: 2000, concurrency: 4, maxQueued: 200 },
      memory: { scopes: 100_000 },
    };
if (args.rounds) PLAN.throughput.rounds = Number(args.rounds);
if (args.duration) PLAN.throughput.duration = Number(args.duration);
const FRAMEWORKS = ['express', 'koa'];
const SCHED_TASKS = ['alsLoop', 'restore', 'minimal', 'rd', 'poppinss']; // each beside the bare loop, in a process of its own
// floor-aa runs the floor's code in a second process: the A/A control that
// shows how far two identical servers' ratios drift apart in this run.
// floor-aa sits as far from floor in the rotation as rd does (two slots), so
// the control measures the same kind of pair as the target.
const ALL_VARIANTS = ['bare', 'floor-aa', 'hand', 'floor', 'poppinss', 'rd', 'rd-idle', 'floor-lib'];
// rd-idle (the middleware without a defer()) is left out by default to keep
// the full run under 10 minutes; the lifecycle micro-benchmark measures it.
const DEFAULT_VARIANTS = ALL_VARIANTS.filter((v) => v !== 'rd-idle' && v !== 'floor-lib');
const VARIANTS = args.variants ? args.variants.split(',').map((s) => s.trim()) : DEFAULT_VARIANTS;
/** The Node 22 --experimental-async-context-frame run of Koa: the target's variants only. */
const ACF_VARIANTS = VARIANTS.filter((v) => ['bare', 'floor-aa', 'hand', 'floor', 'rd'].includes(v));
if (VARIANTS.includes('floor-aa') && !VARIANTS.includes('floor')) fail('--variants: floor-aa is the A/A control of floor; add floor');
for (const v of VARIANTS) if (!ALL_VARIANTS.includes(v)) fail(`unknown variant "${v}" (known: ${ALL_VARIANTS.join(', ')})`);
const ACF = '--experimental-async-context-frame';

const problems = []; // harness problems: any makes the exit status 1

function log(msg) {
  const t = ((performance.now() - T0) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[${t}s] ${msg}\n`);
}
function fail(msg) {
  process.stderr.write(`bench: ${msg}\n`);
  process.exit(1);
}

// ---------------------------------------------------------------------------
// Build: the bench measures dist/, so rebuild it when src/ is newer.

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}
/** Returns a note for the results when dist/ was built or is stale. */
async function ensureBuilt() {
  const dist = join(ROOT, 'dist', 'index.js');
  // Someone else's `npm run build` empties dist/ for a few seconds: wait for it.
  for (let i = 0; i < 60 && !existsSync(dist); i++) {
    if (i === 0) log('dist/ is missing: waiting up to 60 s for a build in progress');
    await pause(1000);
  }
  const missing = !existsSync(dist);
  const stale = !missing && newestMtime(join(ROOT, 'src')) > statSync(dist).mtimeMs;
  if (missing || (stale && args.build)) {
    log(`dist/ is ${missing ? 'missing' : 'older than src/'}: npm run build`);
    execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    return 'dist/ rebuilt first';
  }
  if (stale) {
    log('WARNING: dist/ is older than src/: measuring the last build (npm run build, or pass --build)');
    return 'dist/ was older than src/ (measured the last build)';
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Child scripts (micro, memory, promises) print `RESULT <json>`.

function runChild(node, execArgv, script, arg, timeoutMs = 180_000) {
  return new Promise((resolve, reject) => {
    const argv = [...execArgv, join(BENCH, script), JSON.stringify(arg ?? {})];
    const child = spawn(PIN ? 'taskset' : node, PIN ? ['-c', PIN.children, node, ...argv] : argv, {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => {
      err += c;
      if (err.length > 20_000) err = err.slice(-20_000);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      if (code !== 0 || line === undefined) {
        reject(new Error(`${script} on ${node} exited with ${code ?? signal}\n${err.slice(-3000)}`));
        return;
      }
      resolve(JSON.parse(line.slice('RESULT '.length)));
    });
  });
}

// ---------------------------------------------------------------------------
// HTTP suites

// Rounds order their variants with rotate() (lib/load.mjs): rotated by the
// round, and reversed in odd rounds, so that the floor and request-defer,
// and the floor and its A/A twin, run in both orders over the rounds. With
// rotation alone request-defer always ran two slots after the floor and the
// A/A twin two slots before it, and the slot measured mattered: on Node 26
// (2026-12-04) the A/A twin moved into request-defer's slot came out 0.925×
// the floor (Express), against 0.999× in its own slot minutes earlier.

function checkRun(label, r) {
  const problem = runProblem(r);
  if (problem !== undefined) problems.push(`${label}: ${problem}`);
}

function serverFlags(execArgv, variant, tag) {
  if (!args.profile) return execArgv;
  mkdirSync(PROFILES, { recursive: true });
  return [...execArgv, '--cpu-prof', `--cpu-prof-dir=${PROFILES}`, `--cpu-prof-name=${tag}-${variant}.cpuprofile`];
}

/** Per-round ratios a/b (same round, so drift hits both), then their median. */
function ratio(runs, a, b, key = 'rps') {
  if (runs[a] === undefined || runs[b] === undefined) return NaN;
  const xs = runs[a].map((r, i) => r[key] / runs[b][i][key]);
  return median(xs);
}

/** Starts servers a few at a time (startup is CPU-bound: imports). */
async function startAll(specs) {
  const started = new Array(specs.length);
  let next = 0;
  const worker = async () => {
    while (next < specs.length) {
      const i = next++;
      const { node, execArgv, config } = specs[i];
      started[i] = await startServer(node, execArgv, config, { prefix: PIN ? ['taskset', '-c', PIN.children] : [] });
    }
  };
  const results = await Promise.allSettled([worker(), worker(), worker()]);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) {
    await Promise.all(started.filter(Boolean).map((s) => s.stop()));
    throw failed.reason;
  }
  return started;
}

function throughputSpecs(label, node, execArgv, framework, variants) {
  const tag = `${label}-${framework}`;
  return variants.map((variant) => ({
    key: `throughput:${framework}:${variant}`,
    node,
    execArgv: serverFlags(execArgv, variant, tag),
    config: { framework, suite: 'throughput', variant },
  }));
}

/**
 * Every round starts a fresh server process per variant: a server process
 * keeps whatever speed it started with (two processes of the same code
 * differed by 20 % in CPU per request, for all their rounds), so servers
 * kept across rounds would freeze one draw per variant into every round.
 */
async function throughputSuite(label, node, execArgv, framework, variants = VARIANTS) {
  const { rounds, warm, duration } = PLAN.throughput;
  const runs = Object.fromEntries(variants.map((v) => [v, []]));
  for (let round = 0; round < rounds; round++) {
    log(`  ${label} ${framework} throughput round ${round + 1}/${rounds}: ${variants.length} fresh servers`);
    const started = await startAll(throughputSpecs(`${label}-r${round + 1}`, node, execArgv, framework, variants));
    try {
      const servers = Object.fromEntries(variants.map((v, i) => [v, started[i]]));
      for (const variant of variants) await load({ port: servers[variant].port, duration: warm, connections: PLAN.connections });
      for (const variant of rotate(variants, round)) {
        const r = await loadWithCpu(servers[variant].port, { duration, connections: PLAN.connections });
        r.cpuRps = 1e6 / r.cpuUs; // req/s one fully available core would serve
        checkRun(`${label} ${framework} ${variant}`, r);
        delete r.samples;
        runs[variant].push(r);
      }
    } finally {
      await Promise.all(started.map((srv) => srv.stop()));
    }
  }
  const out = {};
  const aa = runs['floor-aa'] === undefined || runs.floor === undefined ? undefined : {
    rounds: runs['floor-aa'].map((r, i) => +(r.rps / runs.floor[i].rps).toFixed(3)),
    cpuRounds: runs['floor-aa'].map((r, i) => +(r.cpuRps / runs.floor[i].cpuRps).toFixed(3)),
  };
  for (const v of variants) {
    out[v] = {
      rps: median(runs[v].map((r) => r.rps)),
      p50: median(runs[v].map((r) => r.p50)),
      p99: median(runs[v].map((r) => r.p99)),
      rounds: runs[v].map((r) => Math.round(r.rps)),
      vsBare: ratio(runs, v, 'bare'),
      vsFloor: ratio(runs, v, 'floor'),
      vsHand: ratio(runs, v, 'hand'),
      cpuUs: median(runs[v].map((r) => r.cpuUs)),
      cpuVsBare: ratio(runs, v, 'bare', 'cpuRps'),
      cpuVsFloor: ratio(runs, v, 'floor', 'cpuRps'),
      cpuVsHand: ratio(runs, v, 'hand', 'cpuRps'),
    };
  }
  return { variants: out, aa };
}

// concurrency raised so the deferred work never waits: at `rate` req/s with
// 20 ms each, rate * 0.02 callbacks run at once.
const latencySpec = (node, execArgv, framework) => ({
  key: `latency:${framework}`,
  node,
  execArgv,
  config: { framework, suite: 'latency', defer: { concurrency: 1000 } },
});

// none-aa requests /none again in its own slot of each round: the A/A
// control for the p99 ratios.
const LATENCY_PATH = { none: '/none', 'none-aa': '/none', deferred: '/deferred', inline: '/inline' };

async function latencySuite(label, framework, server) {
  const { rounds, warm, duration, rate } = PLAN.latency;
  const routes = Object.keys(LATENCY_PATH);
  for (const route of routes) await load({ port: server.port, path: LATENCY_PATH[route], duration: warm, connections: PLAN.connections, rate });
  const runs = Object.fromEntries(routes.map((r) => [r, []]));
  for (let round = 0; round < rounds; round++) {
    log(`  ${label} ${framework} latency round ${round + 1}/${rounds}`);
    for (const route of rotate(routes, round)) {
      const r = await load({ port: server.port, path: LATENCY_PATH[route], duration, connections: PLAN.connections, rate });
      checkRun(`${label} ${framework} latency /${route}`, r);
      runs[route].push(r);
    }
  }
  await getJSON(server.port, '/__drain');
  const stats = await getJSON(server.port, '/__stats');
  const out = { rate, routes: {}, dropped: stats.stats.dropped, errorsByPhase: stats.errorsByPhase };
  // Percentiles over the responses of all rounds pooled: p99 of one short
  // round rests on a dozen responses; pooled, on a few dozen.
  const pooled = Object.fromEntries(routes.map((route) => [route, pool(runs[route])]));
  for (const route of routes) {
    out.routes[route] = {
      rps: median(runs[route].map((r) => r.rps)),
      responses: pooled[route].length,
      p50: percentile(pooled[route], 50),
      p99: percentile(pooled[route], 99),
      p99VsNone: percentile(pooled[route], 99) / percentile(pooled.none, 99),
      p99RoundRatios: runs[route].map((r, i) => +(r.p99 / runs.none[i].p99).toFixed(3)),
    };
  }
  for (const route of routes) for (const r of runs[route]) delete r.samples;
  return out;
}

const overloadSpec = (node, execArgv) => ({
  key: 'overload',
  node,
  execArgv: [...execArgv, '--expose-gc'],
  config: { framework: 'express', suite: 'overload', defer: { concurrency: PLAN.overload.concurrency, maxQueued: PLAN.overload.maxQueued } },
});

async function overloadSuite(label, server) {
  const { warm, duration, rate, concurrency, maxQueued } = PLAN.overload;
  await load({ port: server.port, path: '/none', duration: warm, connections: PLAN.connections });
  const { heapUsed: baseline } = await getJSON(server.port, '/__heap');
  await getJSON(server.port, '/__sample');
  log(`  ${label} express overload: ${rate} req/s for ${duration} s, concurrency ${concurrency}, maxQueued ${maxQueued}`);
  const r = await load({ port: server.port, path: '/deferred', duration, connections: PLAN.connections, rate });
  checkRun(`${label} overload`, r);
  delete r.samples;
  const during = await getJSON(server.port, '/__stats');
  const drained = await getJSON(server.port, '/__drain');
  const capacity = concurrency / 0.02; // callbacks/s the scheduler can finish (20 ms each)
  return {
    rate,
    concurrency,
    maxQueued,
    capacity,
    overloadFactor: r.rps / capacity,
    rps: r.rps,
    p50: r.p50,
    p99: r.p99,
    requests: r.requests,
    dropped: during.stats.dropped,
    completedDuring: during.stats.completed,
    overflowReports: during.errorsByPhase.overflow ?? 0,
    peakQueued: during.peakQueued,
    baseline,
    peakHeap: during.peakHeap,
    afterDrain: drained.heapUsed,
    drainMs: drained.drainMs,
    completedTotal: drained.stats.completed,
  };
}

/**
 * Several processes' scheduler results: medians of each task's time (shown),
 * and medians over processes of each task's speed relative to the bare loop
 * of the same process (`vsBare`, what the targets use).
 */
function mergeScheduler(runs) {
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r.ms)))];
  const having = (k) => runs.filter((r) => r.ms[k] !== undefined);
  const ms = {};
  const vsBare = {};
  for (const k of keys) {
    ms[k] = median(having(k).map((r) => r.ms[k]));
    vsBare[k] = median(having(k).map((r) => r.ms.bare / r.ms[k]));
  }
  const n = runs[0].n;
  const rdRuns = having('rd');
  return {
    n,
    rounds: runs[0].rounds,
    processes: rdRuns.length,
    ms,
    callsPerSec: Object.fromEntries(Object.entries(ms).map(([k, v]) => [k, n / (v / 1000)])),
    vsBare,
    // rd and @poppinss/defer ran in separate processes: compare their speeds relative to each one's bare loop.
    rdVsPoppinss: vsBare.rd / vsBare.poppinss,
    perProcess: rdRuns.map((r) => r.callsPerSec),
  };
}

// ---------------------------------------------------------------------------

async function measureNode(major) {
  const node = resolveNode(major, log);
  const version = nodeVersion(node);
  log(`Node ${version} (${node})`);
  const res = { major, version, execArgv: [] };
  const step = async (suite, fn) => {
    if (!only.includes(suite)) return;
    try {
      await fn();
    } catch (error) {
      problems.push(`Node ${major} ${suite}: ${error.stack ?? error}`);
      log(`  ${suite} FAILED: ${error.message}`);
    }
  };
  // The latency and overload servers start up front (idle servers cost
  // nothing) and stop at the end; the throughput suite starts its own per round.
  const specs = [];
  if (only.includes('latency')) for (const fw of FRAMEWORKS) specs.push(latencySpec(node, [], fw));
  if (only.includes('overload')) specs.push(overloadSpec(node, []));
  let servers = [];
  if (specs.length > 0) {
    log(`  N${major}: starting ${specs.length} servers`);
    try {
      servers = await startAll(specs);
    } catch (error) {
      problems.push(`Node ${major} servers: ${error.stack ?? error}`);
      return [res];
    }
  }
  const byKey = Object.fromEntries(specs.map((spec, i) => [spec.key, servers[i]]));
  try {
    await step('throughput', async () => {
      res.throughput = {};
      for (const fw of FRAMEWORKS) res.throughput[fw] = await throughputSuite(`N${major}`, node, [], fw);
    });
    await step('latency', async () => {
      res.latency = {};
      for (const fw of FRAMEWORKS) res.latency[fw] = await latencySuite(`N${major}`, fw, byKey[`latency:${fw}`]);
    });
    await step('overload', async () => {
      res.overload = await overloadSuite(`N${major}`, byKey.overload);
    });
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
  await step('micro', async () => {
    log(`  N${major} micro-benchmarks`);
    res.micro = await runChild(node, [], 'micro.mjs', { quick: QUICK, only: ['defer', 'lifecycle', 'linear'] });
    // The scheduler in processes of its own: one per task and repetition,
    // each task interleaved with the bare loop in its process. This machine's
    // speed drifts by up to 1.5× over seconds (a plain integer loop does too),
    // so absolute times are one sample each; the targets use the median over
    // processes of the ratio to the bare loop of the same process. Tasks do
    // not share a process: they slow each other down through Node's own
    // async_hooks code (see micro.mjs).
    const runs = [];
    for (let i = 0; i < (QUICK ? 1 : 3); i++) {
      for (const task of SCHED_TASKS) {
        await pause(50);
        runs.push((await runChild(node, [], 'micro.mjs', { quick: QUICK, only: ['scheduler'], schedTasks: [task] })).scheduler);
      }
    }
    res.micro.scheduler = mergeScheduler(runs);
    await pause(100);
  });
  await step('memory', async () => {
    log(`  N${major} memory: ${PLAN.memory.scopes} scopes`);
    res.memory = await runChild(node, ['--expose-gc'], 'memory.mjs', { scopes: PLAN.memory.scopes });
  });
  await step('promises', async () => {
    log(`  N${major} promises on the terminate path`);
    res.promises = await runChild(node, [], 'promises.mjs', {});
  });
  const out = [res];
  // Koa on Node 22 with AsyncContextFrame (the default from Node 24 on).
  if (major === '22' && !QUICK && only.includes('throughput')) {
    const acf = { major: '22acf', version: `${version} ${ACF}`, execArgv: [ACF], throughput: {} };
    await step('throughput', async () => {
      acf.throughput.koa = await throughputSuite('N22acf', node, [ACF], 'koa', ACF_VARIANTS);
    });
    out.push(acf);
  }
  return out;
}

function machine() {
  const cpus = os.cpus();
  let nproc = os.availableParallelism?.() ?? cpus.length;
  try {
    nproc = Number(execFileSync('nproc', { encoding: 'utf8' }).trim());
  } catch {
    // no nproc: keep Node's count
  }
  return {
    nproc,
    cpu: cpus[0]?.model ?? 'unknown',
    memGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    loadStart: os.loadavg().map((x) => +x.toFixed(2)),
  };
}

/**
 * The counts of `npm run bench:instructions` (a separate command: callgrind
 * runs each server ~50× slower), folded into the report when present.
 */
function readInstructions() {
  const file = join(OUT, 'instructions.json');
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8'));
}

async function main() {
  if (args.render) {
    const results = JSON.parse(readFileSync(args.render, 'utf8'));
    results.instructions = readInstructions() ?? results.instructions;
    results.targets = evaluateTargets(results);
    process.stdout.write(renderText(results));
    mkdirSync(OUT, { recursive: true });
    writeFileSync(join(OUT, 'results.md'), renderMarkdown(results));
    writeFileSync(join(OUT, 'chart.svg'), renderSvg(results));
    return;
  }
  const buildNote = await ensureBuilt();
  const revisionNote = revision(ROOT);
  snapshotDist(ROOT, join(RAW, 'dist-snapshot')); // every child loads this copy of dist/
  const machineInfo = machine(); // before pinning: nproc counts the CPUs this process may use
  PIN = pinPlan(args['no-pin']);
  const results = {
    date: new Date().toISOString(),
    quick: QUICK,
    plan: PLAN,
    buildNote,
    revision: revisionNote,
    machine: machineInfo,
    runner: process.version,
    pinned: PIN === undefined ? undefined : `runner and autocannon on CPU ${PIN.runner}, measured processes on CPU ${PIN.children} (taskset)`,
    nodes: [],
  };
  log(`request-defer bench (${QUICK ? 'quick' : 'full'}): Node ${majors.join(', ')}; suites ${only.join(', ')}`);
  for (const major of majors) {
    let node;
    try {
      node = await measureNode(major);
    } catch (error) {
      problems.push(`Node ${major}: ${error.stack ?? error}`);
      continue;
    }
    results.nodes.push(...node);
  }
  results.machine.loadEnd = os.loadavg().map((x) => +x.toFixed(2));
  results.elapsedSec = +((performance.now() - T0) / 1000).toFixed(1);
  results.instructions = readInstructions();
  results.targets = evaluateTargets(results);
  results.problems = problems;

  process.stdout.write(renderText(results));
  mkdirSync(OUT, { recursive: true });
  mkdirSync(RAW, { recursive: true });
  writeFileSync(join(OUT, 'results.md'), renderMarkdown(results));
  writeFileSync(join(OUT, 'chart.svg'), renderSvg(results));
  writeFileSync(join(OUT === BENCH ? RAW : OUT, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  log(`wrote ${join(OUT, 'results.md')} and ${join(OUT, 'chart.svg')} in ${results.elapsedSec} s`);
  if (problems.length > 0) {
    process.stderr.write(`\nbench: the harness had ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
    process.exitCode = 1;
  }
}

main().catch((error) => {
  process.stderr.write(`bench: harness failure: ${error.stack ?? error}\n`);
  process.exit(1);
});
