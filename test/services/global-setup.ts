/**
 * globalSetup of the `services` project: makes sure a Redis server answers
 * on 127.0.0.1:6390 for the BullMQ tests, and tells the test files where.
 *
 * - Something already answers PING there (CI's `.ci/run`, a developer's own
 *   server): it is used as is and left running.
 * - Nothing answers and `redis-server` is not installed: the run fails with
 *   the command that installs it (never a skip).
 * - Otherwise it starts one (TOOLCHAIN.md's recipe: no persistence,
 *   daemonized, pid in /tmp/redis-6390.pid) and stops it by pid at teardown.
 *   Only a server a test run started is ever stopped, and only by the last
 *   run still using it (see takeLease()), so concurrent runs do not pull
 *   Redis from under each other.
 *
 * The Chromium check lives in ./chromium.ts (`requireChromium()`): only the
 * browser test needs it.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';

export const REDIS_HOST = '127.0.0.1';
export const REDIS_PORT = 6390;
const PIDFILE = `/tmp/redis-${REDIS_PORT}.pid`;
/** One empty file per test run using the server, named by the run's pid. */
const LEASES = `/tmp/redis-${REDIS_PORT}.leases`;
/** The pid of a server that a test run started (and the last run out stops). */
const STARTED_BY_TESTS = `/tmp/redis-${REDIS_PORT}.started-by-tests`;
const INSTALL_REDIS = 'apt-get update && apt-get install -y redis-server';

declare module 'vitest' {
  export interface ProvidedContext {
    redisPort: number;
  }
}

/** Sends PING; resolves true on +PONG, false when nothing listens or something else answers. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: REDIS_HOST, port });
    let reply = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2_000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    socket.on('close', () => done(false));
  });
}

/** Polls `check` every 50 ms until it returns true, failing after `ms` with `what`. */
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(what);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function redisInstalled(): boolean {
  const probe = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  return probe.error === undefined && probe.status === 0;
}

function readPid(): { pid: number; mtimeMs: number } | undefined {
  try {
    const pid = Number(readFileSync(PIDFILE, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? { pid, mtimeMs: statSync(PIDFILE).mtimeMs } : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `pid` still runs (a zombie nobody reaped yet counts as stopped). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // no /proc: trust kill(0)
  }
}

/** Whether `pid` is a live redis-server (guards against a stale pid reused by another process). */
function isRedis(pid: number): boolean {
  if (!alive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis-server');
  } catch {
    return true; // no /proc: trust kill(0)
  }
}

function readNumber(file: string): number | undefined {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Several runs may share the server (two developers' or agents' runs, a
 * watch mode next to a one-off run): each holds a lease while it runs, and
 * the last one out stops a server that a test run started. A server nobody's
 * setup started (CI's, a developer's) is never stopped.
 */
function takeLease(): () => number {
  mkdirSync(LEASES, { recursive: true });
  const mine = join(LEASES, String(process.pid));
  writeFileSync(mine, '');
  return function release(): number {
    rmSync(mine, { force: true });
    let others = 0;
    for (const entry of readdirSync(LEASES)) {
      const pid = Number(entry);
      if (Number.isInteger(pid) && alive(pid)) others++;
      else rmSync(join(LEASES, entry), { force: true }); // a run that died without its teardown
    }
    return others;
  };
}

async function stopIfStartedByTests(): Promise<void> {
  const pid = readNumber(STARTED_BY_TESTS);
  rmSync(STARTED_BY_TESTS, { force: true });
  if (pid === undefined || pid !== readPid()?.pid || !isRedis(pid)) return;
  process.kill(pid, 'SIGTERM');
  await until(async () => !alive(pid), 10_000, `redis-server (pid ${pid}) did not stop within 10 s`);
}

async function startRedis(): Promise<void> {
  const before = readPid();
  const started = spawnSync(
    'redis-server',
    ['--port', String(REDIS_PORT), '--bind', REDIS_HOST, '--save', '', '--appendonly', 'no', '--daemonize', 'yes', '--pidfile', PIDFILE],
    { encoding: 'utf8' },
  );
  if (started.status !== 0) {
    throw new Error(`redis-server failed to start on ${REDIS_HOST}:${REDIS_PORT} (exit ${started.status}): ${started.stderr || started.stdout}`);
  }
  await until(() => ping(REDIS_PORT), 10_000, `redis-server did not answer on ${REDIS_HOST}:${REDIS_PORT} within 10 s`);
  // Started by this run only if the pidfile was written by this start (a
  // concurrent run may have won the port; then our daemon exited and the
  // pidfile, and the server, are that run's).
  const after = readPid();
  if (after !== undefined && (before === undefined || after.pid !== before.pid || after.mtimeMs !== before.mtimeMs)) {
    writeFileSync(STARTED_BY_TESTS, String(after.pid));
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  project.provide('redisPort', REDIS_PORT);
  process.env.REDIS_PORT = String(REDIS_PORT);

  const release = takeLease();
  try {
    if (!(await ping(REDIS_PORT))) {
      if (!redisInstalled()) throw new Error(INSTALL_REDIS);
      await startRedis();
    }
  } catch (error) {
    if (release() === 0) await stopIfStartedByTests();
    throw error;
  }

  return async function teardown(): Promise<void> {
    if (release() === 0) await stopIfStartedByTests();
  };
}
