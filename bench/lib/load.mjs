// Child-process servers and the autocannon driver.
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

const SERVER = fileURLToPath(new URL('../server.mjs', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Starts bench/server.mjs with `config` under `node` (a binary path) and
 * resolves once it listens. `execArgv` are extra Node flags. Options:
 * `prefix`, a command the server runs under (`['taskset', '-c', '1']`, see
 * pinPlan() in lib/pin.mjs; valgrind in instructions.mjs); `env`, variables set
 * over this process's environment; `listenTimeoutMs`.
 */
export function startServer(node, execArgv, config, { prefix = [], env = { NODE_ENV: 'production' }, listenTimeoutMs = 15_000 } = {}) {
  return new Promise((resolve, reject) => {
    const argv = [...prefix, node, ...execArgv, SERVER, JSON.stringify(config)];
    const child = spawn(argv[0], argv.slice(1), {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let out = '';
    let err = '';
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(new Error(`server ${JSON.stringify(config)} on ${node}: ${why}\n${err}`));
    };
    const timer = setTimeout(() => fail(`did not listen within ${listenTimeoutMs / 1000} s`), listenTimeoutMs);
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const m = /LISTENING (\d+)/.exec(out);
      if (m && !settled) {
        settled = true;
        clearTimeout(timer);
        resolve({
          port: Number(m[1]),
          child,
          stderr: () => err,
          stop: () => stopChild(child),
        });
      }
    });
    child.stderr.on('data', (chunk) => {
      err += chunk;
      if (err.length > 20_000) err = err.slice(-20_000);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      fail(`exited early (code ${code}, signal ${signal})`);
    });
  });
}

function stopChild(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve();
      return;
    }
    const kill = setTimeout(() => child.kill('SIGKILL'), 3000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** GET a control route of a bench server; resolves to its JSON body. */
export function getJSON(port, path, timeoutMs = 60_000) {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body));
        } catch {
          reject(new Error(`${path}: not JSON (${res.statusCode}): ${body.slice(0, 200)}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${path}: timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** The p-th percentile (0..100) of sorted samples, nearest rank. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/**
 * Drives 127.0.0.1:port/path with autocannon. Latencies are recorded from
 * autocannon's per-response event at full precision (its own histogram
 * rounds to whole milliseconds). `rate` (req/s over all connections) makes
 * it an open-loop-ish fixed-rate run (`-R`).
 */
export function load({ port, path = '/', duration, connections = 50, rate }) {
  return new Promise((resolve, reject) => {
    let samples = new Float64Array(1 << 16);
    let n = 0;
    const started = performance.now();
    const opts = { url: `http://127.0.0.1:${port}${path}`, connections, duration, sampleInt: 100 };
    if (rate !== undefined) opts.overallRate = rate;
    const instance = autocannon(opts, (error, result) => {
      if (error) {
        reject(error);
        return;
      }
      const seconds = (performance.now() - started) / 1000;
      const sorted = samples.subarray(0, n).sort();
      resolve({
        requests: n,
        rps: n / seconds,
        p50: percentile(sorted, 50),
        p99: percentile(sorted, 99),
        errors: result.errors + result.timeouts,
        non2xx: result.non2xx,
        samples: sorted,
      });
    });
    instance.on('response', (_client, statusCode, _bytes, ms) => {
      if (statusCode < 200 || statusCode >= 300) return;
      if (n === samples.length) {
        const bigger = new Float64Array(samples.length * 2);
        bigger.set(samples);
        samples = bigger;
      }
      samples[n++] = ms;
    });
  });
}

/** All samples of several runs, sorted (pooled percentiles). */
export function pool(runs) {
  const all = new Float64Array(runs.reduce((n, r) => n + r.samples.length, 0));
  let at = 0;
  for (const r of runs) {
    all.set(r.samples, at);
    at += r.samples.length;
  }
  return all.sort();
}

export const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

export const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** xs rotated left by `by`, reversed when `reverse`. */
function shifted(xs, by, reverse) {
  const order = xs.map((_, i) => xs[(i + by) % xs.length]);
  return reverse ? order.reverse() : order;
}

/**
 * Round k's order of xs for run.mjs: rotated by k, reversed in odd rounds.
 * Not every pair runs in both orders (with 6 variants over 3 rounds the
 * first two never swap); run.mjs's lists are ordered so that the pairs its
 * targets compare (floor and request-defer, floor and its A/A twin) do.
 */
export const rotate = (xs, k) => shifted(xs, k, k % 2 === 1);

/**
 * Round k's order of xs for A/B runs: rotated by k >> 1, reversed in odd
 * rounds, so that rounds 2j and 2j + 1 run the same order forwards and
 * backwards: over any even number of rounds every pair runs in both
 * orders equally often, and over 2 × xs.length rounds every variant
 * visits every slot.
 */
export const pairedOrder = (xs, k) => shifted(xs, k >> 1, k % 2 === 1);

/**
 * load() on a bench server, reading its /__cpu route before and after:
 * adds the server's CPU time per response in µs, in all (`cpuUs`) and
 * apart (`userUs`, `systemUs`).
 */
export async function loadWithCpu(port, options) {
  const before = await getJSON(port, '/__cpu');
  const r = await load({ port, ...options });
  const after = await getJSON(port, '/__cpu');
  r.cpuUs = (after.us - before.us) / r.requests;
  r.userUs = (after.user - before.user) / r.requests;
  r.systemUs = (after.system - before.system) / r.requests;
  return r;
}

/** Why a load() run cannot be used (failed requests, non-2xx, none at all), or undefined. */
export function runProblem(r) {
  if (r.errors > 0 || r.non2xx > 0 || r.requests === 0) return `${r.requests} responses, ${r.errors} errors, ${r.non2xx} non-2xx`;
  return undefined;
}
