#!/usr/bin/env node
// npm run bench:ab -- [--node 20,24,26] [--framework express,koa] [--variants floor,floor-aa,floor-restore,rd-idle,rd] [--rounds 10]
//
// A/B of server CPU per request, user and system time apart: the longer,
// narrower measurement behind the HTTP deficit described in
// docs/benchmarks.md. Each round starts a fresh server process per variant
// (a process's speed drifts for minutes on a VM), warms them all, then loads
// each for a few seconds with 50 connections, in an order that runs forwards
// in even rounds and backwards in odd ones, shifted by one every two rounds
// (pairedOrder() in lib/load.mjs); a variant's figure is the median over
// rounds of (CPU time used ÷ responses), read from the server's /__cpu
// route. The ratio column is the first variant's CPU per request ÷ the row's
// (higher is cheaper), and the second variant is best an A/A twin of the
// first, so the table shows what chance alone does to a ratio.
//
// Writes the table to bench/.raw/ab/latest.md (or --out; the committed
// record, bench/ab.md, is written with --out bench/ab.md) and the raw
// numbers to bench/.raw/ab/<date>.json; prints the table.
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { load, loadWithCpu, median, pairedOrder, runProblem, startServer } from './lib/load.mjs';
import { nodeVersion, resolveNode } from './lib/nodes.mjs';
import { pinPlan } from './lib/pin.mjs';
import { snapshotDist } from './lib/pkg.mjs';
import { VARIANT_LABEL } from './lib/report.mjs';
import { revision } from './lib/revision.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BENCH = join(ROOT, 'bench');
const VARIANTS = ['bare', 'floor', 'floor-aa', 'floor-restore', 'floor-lib', 'hand', 'rd', 'rd-idle', 'poppinss'];
const DEFAULT_VARIANTS = ['floor', 'floor-aa', 'floor-restore', 'rd-idle', 'rd'];
const FRAMEWORKS = { express: 'Express 5', koa: 'Koa 3' };

const HELP = `npm run bench:ab -- [options]
  --node L        comma list of Node majors (default: the one running this script)
  --framework L   comma list of express,koa (default both)
  --variants L    comma list, the first is the baseline of the ratios
                  (default ${DEFAULT_VARIANTS.join(',')}; also ${VARIANTS.filter((v) => !DEFAULT_VARIANTS.includes(v)).join(', ')})
  --rounds N      rounds of fresh servers (default 10; even, so every pair runs in both orders)
  --duration S    seconds of load per variant and round (default 2; 1 s of warm-up before)
  --connections N autocannon connections (default 50)
  --no-pin        do not pin the load generator and the servers to separate CPUs
  --out FILE      markdown output (default bench/.raw/ab/latest.md; the committed
                  record is bench/ab.md: --out bench/ab.md)`;

function fail(message) {
  console.error(`bench/ab.mjs: ${message}\n\n${HELP}`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      node: { type: 'string' },
      framework: { type: 'string', default: 'express,koa' },
      variants: { type: 'string', default: DEFAULT_VARIANTS.join(',') },
      rounds: { type: 'string', default: '10' },
      duration: { type: 'string', default: '2' },
      connections: { type: 'string', default: '50' },
      out: { type: 'string' },
      'no-pin': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }));
} catch (error) {
  fail(error.message);
}
if (args.help) {
  console.log(HELP);
  process.exit(0);
}

/** A non-empty comma list without repeats, each item accepted by `ok`. */
const list = (value, name, ok, expected) => {
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) fail(`--${name} is empty: expected ${expected}`);
  for (const item of items) if (!ok(item)) fail(`--${name}: unknown ${JSON.stringify(item)}, expected ${expected}`);
  if (new Set(items).size !== items.length) fail(`--${name} lists an item twice`);
  return items;
};
const positive = (value, name, integer) => {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    fail(`--${name} expects a positive ${integer ? 'whole number' : 'number'}, got ${JSON.stringify(value)}`);
  }
  return n;
};
const frameworks = list(args.framework, 'framework', (fw) => fw in FRAMEWORKS, 'express, koa');
const variants = list(args.variants, 'variants', (v) => VARIANTS.includes(v), VARIANTS.join(', '));
if (variants.length < 2) fail('--variants needs at least two variants: a baseline and something to compare');
const rounds = positive(args.rounds, 'rounds', true);
const duration = positive(args.duration, 'duration', false);
const connections = positive(args.connections, 'connections', true);
const majors = list(args.node ?? process.versions.node.split('.')[0], 'node', (m) => /^\d+$/.test(m), 'Node majors such as 20,24');
const out = resolve(process.cwd(), args.out ?? join(BENCH, '.raw', 'ab', 'latest.md'));
if (args.out !== undefined && !(existsSync(dirname(out)) && statSync(dirname(out)).isDirectory())) {
  fail(`--out: the folder ${dirname(out)} does not exist`);
}
if (!existsSync(join(ROOT, 'dist', 'index.js'))) fail('dist/ is not built: run npm run build first (the A/B measures the built package)');
const nodes = majors.map((m) => ({ major: m, bin: resolveNode(m, (msg) => console.error(msg)) }));

// What is measured, read before the snapshot is taken.
const rev = revision(ROOT);
// The servers load the built package from a snapshot of dist/ of this run's
// own (a rebuild, or another A/B, during the run must not change what is
// measured), removed at the end.
const snapshot = snapshotDist(ROOT, mkdtempSync(join(os.tmpdir(), 'request-defer-ab-dist-')));
process.on('exit', () => rmSync(snapshot, { recursive: true, force: true }));

const nproc = os.availableParallelism(); // before pinning narrows it
const pin = pinPlan(args['no-pin']);
const prefix = pin === undefined ? [] : ['taskset', '-c', pin.children];

const started = Date.now();
const results = {};
for (const { major, bin: node } of nodes) for (const fw of frameworks) {
  const perRound = Object.fromEntries(variants.map((v) => [v, { user: [], system: [], rps: [] }]));
  for (let round = 0; round < rounds; round++) {
    console.error(`N${major} ${fw} round ${round + 1}/${rounds}`);
    const order = pairedOrder(variants, round);
    const servers = {};
    try {
      for (const v of order) servers[v] = await startServer(node, [], { framework: fw, suite: 'throughput', variant: v }, { prefix });
      for (const v of order) await load({ port: servers[v].port, duration: 1, connections });
      for (const v of order) {
        const run = await loadWithCpu(servers[v].port, { duration, connections });
        const problem = runProblem(run);
        if (problem !== undefined) throw new Error(`${fw} ${v}: ${problem}`);
        perRound[v].user.push(run.userUs);
        perRound[v].system.push(run.systemUs);
        perRound[v].rps.push(run.rps);
      }
    } finally {
      for (const s of Object.values(servers)) await s.stop();
    }
  }
  const base = variants[0];
  const cpu = (v) => perRound[v].user.map((u, i) => u + perRound[v].system[i]);
  results[`${major} ${fw}`] = { major, fw, version: nodeVersion(node), rows: variants.map((v) => ({
    variant: v,
    user: median(perRound[v].user),
    system: median(perRound[v].system),
    cpu: median(cpu(v)),
    rps: median(perRound[v].rps),
    // Per-round ratios first (both servers ran in the same round), then their median.
    ratio: median(cpu(v).map((c, i) => cpu(base)[i] / c)),
    userOverBase: median(perRound[v].user.map((u, i) => u - perRound[base].user[i])),
    perRound: perRound[v],
  })) };
}

const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : '—');
const header = `| node | framework | variant | user µs/req | system µs/req | cpu µs/req | user − ${variants[0]} (µs) | ×${variants[0]} by CPU | req/s |\n| :-- | :-- | :-- | --: | --: | --: | --: | --: | --: |`;
const rows = Object.values(results).flatMap(({ major, fw, rows: rs }) =>
  rs.map(
    (r) =>
      `| N${major} | ${FRAMEWORKS[fw]} | ${VARIANT_LABEL[r.variant] ?? r.variant} | ${f2(r.user)} | ${f2(r.system)} | ${f2(r.cpu)} | ${r.variant === variants[0] ? '—' : `${r.userOverBase >= 0 ? '+' : '−'}${f2(Math.abs(r.userOverBase))}`} | ${r.ratio.toFixed(3)} | ${Math.round(r.rps).toLocaleString('en-US')} |`,
  ),
);
const table = [header, ...rows].join('\n');
const md = `# CPU per request, A/B (npm run bench:ab)

- Date: ${new Date().toISOString()}
- Node: ${[...new Set(Object.values(results).map((r) => r.version))].join(', ')}
- request-defer: ${rev}
- Machine: nproc ${nproc}, ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.type()} ${os.release()} ${os.arch()}
- Plan: ${rounds} round(s) of fresh servers, ${connections} connections, 1 s warm-up then ${duration} s per variant; ${pin === undefined ? 'unpinned' : `load generator on CPU ${pin.runner}, servers on CPU ${pin.children}`}
- Elapsed: ${((Date.now() - started) / 1000).toFixed(0)} s

Medians over rounds of each server's CPU time per response (process.cpuUsage() before and after the load, ÷ responses); "cpu" is the median of each round's user + system, not the sum of the two medians. "user − ${variants[0]}" is the median of per-round differences; "×${variants[0]} by CPU" the median of per-round ratios ${variants[0]} ÷ row (higher is cheaper). Method and reading: [docs/benchmarks.md](${relative(dirname(out), join(ROOT, 'docs', 'benchmarks.md'))}#cpu-per-request-ab).

${table}
`;
const raw = join(BENCH, '.raw', 'ab');
mkdirSync(raw, { recursive: true });
writeFileSync(join(raw, `${new Date().toISOString().replace(/[:.]/g, '-')}.json`), JSON.stringify({ revision: rev, rounds, duration, connections, variants, results }, null, 2));
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, md);
console.log(table);
console.log(`\nwritten: ${out}`);
