#!/usr/bin/env node
// npm run bench:ab -- [--node 20,24,26] [--framework express,koa] [--variants floor,floor-aa,floor-restore,rd-idle,rd] [--rounds 10]
//
// A/B of server CPU per request, user and system time apart: the longer,
// narrower measurement behind the HTTP deficit described in
// docs/benchmarks.md. Each round starts a fresh server process per variant
// (a process's speed drifts for minutes on a VM), warms them all, then loads
// each for a few seconds with 50 connections, in an order that rotates every
// round and reverses in odd rounds; a variant's figure is the median over
// rounds of (CPU time used ÷ responses), read from the server's /__cpu
// route. The ratio column is the first variant's CPU per request ÷ the row's
// (higher is cheaper), and the second variant is best an A/A twin of the
// first, so the table shows what chance alone does to a ratio.
//
// Writes bench/ab.md (the committed record; --out elsewhere for a scratch
// run) and bench/.raw/ab/<date>.json; prints the table.
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getJSON, load, median, rotate, startServer } from './lib/load.mjs';
import { nodeVersion, resolveNode } from './lib/nodes.mjs';
import { pinPlan } from './lib/pin.mjs';
import { VARIANT_LABEL } from './lib/report.mjs';
import { revision } from './lib/revision.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BENCH = join(ROOT, 'bench');
const VARIANTS = ['bare', 'floor', 'floor-aa', 'floor-restore', 'floor-lib', 'hand', 'rd', 'rd-idle', 'poppinss'];
const FRAMEWORKS = { express: 'Express 5', koa: 'Koa 3' };

const HELP = `npm run bench:ab -- [options]
  --node L        comma list of Node majors (default: the one running this script)
  --framework L   comma list of express,koa (default both)
  --variants L    comma list, the first is the baseline of the ratios
                  (default floor,floor-aa,floor-restore,rd-idle,rd; also ${VARIANTS.filter((v) => !['floor', 'floor-aa', 'floor-restore', 'rd-idle', 'rd'].includes(v)).join(', ')})
  --rounds N      rounds of fresh servers (default 10)
  --duration S    seconds of load per variant and round (default 2; 1 s of warm-up before)
  --connections N autocannon connections (default 50)
  --out FILE      markdown output (default bench/ab.md)`;

const { values: args } = parseArgs({
  options: {
    node: { type: 'string' },
    framework: { type: 'string', default: 'express,koa' },
    variants: { type: 'string', default: 'floor,floor-aa,floor-restore,rd-idle,rd' },
    rounds: { type: 'string', default: '10' },
    duration: { type: 'string', default: '2' },
    connections: { type: 'string', default: '50' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(HELP);
  process.exit(0);
}

function fail(message) {
  console.error(`bench/ab.mjs: ${message}\n\n${HELP}`);
  process.exit(2);
}
const list = (value) => value.split(',').map((s) => s.trim()).filter(Boolean);
const positive = (value, name) => {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) fail(`--${name} expects a positive number, got ${JSON.stringify(value)}`);
  return n;
};
const frameworks = list(args.framework);
for (const fw of frameworks) if (!(fw in FRAMEWORKS)) fail(`unknown framework ${fw} (express, koa)`);
const variants = list(args.variants);
for (const v of variants) if (!VARIANTS.includes(v)) fail(`unknown variant ${v} (${VARIANTS.join(', ')})`);
if (variants.length < 2) fail('--variants needs at least two variants: a baseline and something to compare');
if (new Set(variants).size !== variants.length) fail('--variants lists a variant twice');
const rounds = Math.round(positive(args.rounds, 'rounds'));
const duration = positive(args.duration, 'duration');
const connections = Math.round(positive(args.connections, 'connections'));
const majors = list(args.node ?? process.versions.node.split('.')[0]);
for (const m of majors) if (!/^\d+$/.test(m)) fail(`--node expects Node majors such as 20,24, got ${m}`);
const nodes = majors.map((m) => ({ major: m, bin: resolveNode(m, (msg) => console.error(msg)) }));

// The servers load the built package from a snapshot of dist/ (a rebuild
// during the run must not change what is measured).
const snapshot = join(BENCH, '.raw', 'ab-dist');
rmSync(snapshot, { recursive: true, force: true });
cpSync(join(ROOT, 'dist'), snapshot, { recursive: true });
process.env.REQUEST_DEFER_BENCH_DIST = snapshot;

const nproc = os.availableParallelism(); // before pinning narrows it
const pin = pinPlan();
const prefix = pin === undefined ? [] : ['taskset', '-c', pin.children];

const started = Date.now();
const results = {};
for (const { major, bin: node } of nodes) for (const fw of frameworks) {
  const perRound = Object.fromEntries(variants.map((v) => [v, { user: [], system: [], rps: [] }]));
  for (let round = 0; round < rounds; round++) {
    console.error(`N${major} ${fw} round ${round + 1}/${rounds}`);
    const order = rotate(variants, round);
    const servers = {};
    try {
      for (const v of order) servers[v] = await startServer(node, [], { framework: fw, suite: 'throughput', variant: v }, { prefix });
      for (const v of order) await load({ port: servers[v].port, duration: 1, connections });
      for (const v of order) {
        const before = await getJSON(servers[v].port, '/__cpu');
        const run = await load({ port: servers[v].port, duration, connections });
        const after = await getJSON(servers[v].port, '/__cpu');
        if (run.errors > 0 || run.non2xx > 0 || run.requests === 0) {
          throw new Error(`${fw} ${v}: ${run.errors} errors, ${run.non2xx} non-2xx of ${run.requests} responses`);
        }
        perRound[v].user.push((after.user - before.user) / run.requests);
        perRound[v].system.push((after.system - before.system) / run.requests);
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

const rev = revision(ROOT);
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

Medians over rounds of each server's CPU time per response (process.cpuUsage() before and after the load, ÷ responses). "user − ${variants[0]}" is the median of per-round differences; "×${variants[0]} by CPU" the median of per-round ratios ${variants[0]} ÷ row (higher is cheaper). Method and reading: [docs/benchmarks.md](../docs/benchmarks.md#cpu-per-request-ab).

${table}
`;
const raw = join(BENCH, '.raw', 'ab');
mkdirSync(raw, { recursive: true });
writeFileSync(join(raw, `${new Date().toISOString().replace(/[:.]/g, '-')}.json`), JSON.stringify({ revision: rev, rounds, duration, connections, variants, results }, null, 2));
const out = args.out ?? join(BENCH, 'ab.md');
writeFileSync(out, md);
rmSync(snapshot, { recursive: true, force: true });
console.log(table);
console.log(`\nwritten: ${out}`);
