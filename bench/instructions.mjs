#!/usr/bin/env node
// npm run bench:instructions [-- --quick] [-- --node 20,22,24,26] [-- --variants floor,hand,rd,bare]
//
// CPU instructions per request of the throughput servers (bench/server.mjs),
// counted by valgrind's callgrind: a count, not a time, so neither the speed
// drift of this VM nor other load on the machine moves it. Each server runs
// alone under callgrind with V8's --predictable (no concurrent compiler
// threads, so JIT tiering happens at the same request every time); it gets
// `warm` sequential keep-alive requests with counting off, then `requests`
// counted ones (V8's --predictable-gc-schedule fixes when the heap grows and
// is collected, too). Reported: instructions per request in all, and without the
// JIT compiler's own work (Turbofan and Maglev keep compiling for tens of
// thousands of requests; a long-running server pays that once, and it is
// what makes one process of the same code faster than another for minutes).
//
// Requires valgrind (apt-get install -y valgrind). Writes
// bench/instructions.json (or bench/.raw/quick/ with --quick), which
// `npm run bench` (and --render) folds into results.md.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startServer } from './lib/load.mjs';
import { nodeVersion, resolveNode } from './lib/nodes.mjs';
import { revision } from './lib/revision.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BENCH = join(ROOT, 'bench');
const T0 = performance.now();

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    node: { type: 'string' },
    variants: { type: 'string' },
    frameworks: { type: 'string' },
    warm: { type: 'string' },
    requests: { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  process.stdout.write(`npm run bench:instructions -- [--quick] [--node 20,22,24,26] [--variants floor,hand,rd,bare]
  --quick       the current Node only, Koa floor and request-defer, few requests (< 60 s): a smoke run
  --node        Node majors (default 20,22,24,26)
  --variants    throughput variants of bench/server.mjs (default floor,floor-aa,floor-restore,rd, and hand on Express)
  --frameworks  express,koa (default both)
  --warm N      uncounted requests first (default 20000)
  --requests N  counted requests (default 8000)
  --out DIR     where instructions.json goes (default bench/, or bench/.raw/quick/ with --quick)
`);
  process.exit(0);
}

const QUICK = args.quick;
const majors = args.node ? args.node.split(',') : QUICK ? [process.versions.node.split('.')[0]] : ['20', '22', '24', '26'];
// By default what the targets compare: request-defer and the floor, and on Express the hand-rolled baseline.
// floor-aa: the floor again in a second process, the A/A control of the count itself.
// floor-restore: the floor plus the async-context capture and restore SPEC semantic 11
// asks of any implementation (one AsyncResource per callback), which the floor leaves out.
const variantsOf = (framework) =>
  args.variants
    ? args.variants.split(',')
    : QUICK
      ? ['floor', 'rd']
      : framework === 'express'
        ? ['floor', 'floor-aa', 'floor-restore', 'hand', 'rd']
        : ['floor', 'floor-aa', 'floor-restore', 'rd'];
const frameworks = args.frameworks ? args.frameworks.split(',') : QUICK ? ['koa'] : ['express', 'koa'];
const WARM = Number(args.warm ?? (QUICK ? 1500 : 20_000));
const REQUESTS = Number(args.requests ?? (QUICK ? 500 : 8000));
const OUT = args.out ? resolve(process.cwd(), args.out) : QUICK ? join(BENCH, '.raw', 'quick') : BENCH;
// What the JIT compilers themselves run (function names in callgrind's output).
const COMPILER = /v8::internal::(compiler|maglev|baseline)::/;

const log = (line) => process.stdout.write(`[${((performance.now() - T0) / 1000).toFixed(0).padStart(4)} s] ${line}\n`);

function fail(message) {
  process.stderr.write(`bench:instructions: ${message}\n`);
  process.exit(1);
}

if (!existsSync(join(ROOT, 'dist', 'index.js'))) fail('dist/ is missing: run npm run build first');
for (const tool of ['valgrind', 'callgrind_control', 'callgrind_annotate']) {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
  } catch {
    fail(`${tool} is missing. Install valgrind: apt-get install -y valgrind`);
  }
}

/** `n` sequential GETs of / on one keep-alive connection. */
async function requests(port, n) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < n; i++) {
      await new Promise((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
            if (res.statusCode !== 200) reject(new Error(`GET / answered ${res.statusCode}`));
            res.resume();
            res.on('end', resolve);
          })
          .on('error', reject);
      });
    }
  } finally {
    agent.destroy();
  }
}

function callgrindControl(flag, value, pid) {
  execFileSync('callgrind_control', value === undefined ? [flag, String(pid)] : [flag, value, String(pid)], { stdio: 'ignore' });
}

/** Total and JIT-compiler instructions of one callgrind dump. */
function readDump(file) {
  const text = readFileSync(file, 'utf8');
  const total = Number(/^(?:summary|totals):\s+(\d+)/m.exec(text)?.[1]);
  if (!Number.isFinite(total)) throw new Error(`no totals in ${file}`);
  const annotated = execFileSync('callgrind_annotate', ['--threshold=100', file], { encoding: 'utf8', maxBuffer: 256 << 20 });
  let compiler = 0;
  for (const line of annotated.split('\n')) {
    const m = /^\s*([\d,]+) \([ \d.]+%\)\s+(.*)$/.exec(line);
    if (m && COMPILER.test(m[2])) compiler += Number(m[1].replaceAll(',', ''));
  }
  return { total, compiler };
}

/** One server under callgrind: warm up uncounted, then count `REQUESTS` requests. */
async function measure(node, framework, variant, dir) {
  const prefix = join(dir, `${framework}-${variant}`);
  const server = await startServer(node, ['--predictable', '--predictable-gc-schedule'], { framework, suite: 'throughput', variant }, {
    prefix: ['valgrind', '--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${prefix}.%p`],
    env: {}, // as measured so far: the environment of this process, NODE_ENV not forced
    listenTimeoutMs: 120_000, // Node starts ~50× slower under valgrind
  });
  const pid = server.child.pid;
  const exited = new Promise((resolve) => server.child.once('exit', resolve));
  try {
    await requests(server.port, WARM);
    callgrindControl('-i', 'on', pid);
    await requests(server.port, REQUESTS);
    callgrindControl('-d', undefined, pid);
    const dump = readdirSync(dir).find((f) => f.startsWith(`${framework}-${variant}.${pid}.`));
    if (dump === undefined) throw new Error(`callgrind wrote no dump for ${framework}/${variant}`);
    const { total, compiler } = readDump(join(dir, dump));
    return { perRequest: Math.round(total / REQUESTS), withoutCompiler: Math.round((total - compiler) / REQUESTS) };
  } finally {
    server.child.kill('SIGKILL');
    await exited;
  }
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  const dir = mkdtempSync(join(os.tmpdir(), 'rd-callgrind-'));
  const result = {
    date: new Date().toISOString(),
    quick: QUICK,
    revision: revision(ROOT),
    warm: WARM,
    requests: REQUESTS,
    valgrind: execFileSync('valgrind', ['--version'], { encoding: 'utf8' }).trim(),
    nodes: {},
  };
  try {
    const jobs = [];
    for (const major of majors) {
      const node = resolveNode(major, log);
      const version = nodeVersion(node);
      result.nodes[major] = { version, frameworks: {} };
      for (const framework of frameworks) {
        result.nodes[major].frameworks[framework] = {};
        for (const variant of variantsOf(framework)) jobs.push({ major, node, version, framework, variant });
      }
    }
    // callgrind counts do not depend on load: run one server per core.
    const width = Math.max(1, Math.min(os.availableParallelism(), 4));
    let next = 0;
    const worker = async () => {
      while (next < jobs.length) {
        const job = jobs[next++];
        const counts = await measure(job.node, job.framework, job.variant, dir);
        result.nodes[job.major].frameworks[job.framework][job.variant] = counts;
        log(`${job.version} ${job.framework} ${job.variant}: ${counts.perRequest} instructions/request, ${counts.withoutCompiler} without the JIT compiler`);
      }
    };
    await Promise.all(Array.from({ length: width }, worker));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  result.seconds = Math.round((performance.now() - T0) / 1000);
  const file = join(OUT, 'instructions.json');
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  for (const [major, n] of Object.entries(result.nodes)) {
    for (const [framework, v] of Object.entries(n.frameworks)) {
      if (v.floor && v.rd) {
        log(`N${major} ${framework}: floor ÷ request-defer instructions/request = ${(v.floor.withoutCompiler / v.rd.withoutCompiler).toFixed(3)}× (with the JIT compiler: ${(v.floor.perRequest / v.rd.perRequest).toFixed(3)}×)`);
      }
    }
  }
  log(`wrote ${file} in ${result.seconds} s`);
}

main().catch((error) => fail(error?.stack ?? String(error)));
