/**
 * globalSetup of the `services` project: makes sure a Redis server answers
 * on 127.0.0.1:6390 for the BullMQ tests, and tells the test files where.
 *
 * - Something already answers PING there (CI's `.ci/run`, a developer's own
 *   server): it is used as is and left running.
 * - Nothing answers and `redis-server` is not installed: the run fails with
 *   the command that installs it (never a skip).
 * - Otherwise it starts one (TOOLCHAIN.md's recipe: no persistence,
 *   daemonized, pid in /tmp/redis-6390.pid) and stops it by pid at teardown,
 *   only if this run started it.
 *
 * The Chromium check lives in ./chromium.ts (`requireChromium()`): only the
 * browser test needs it.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import type { TestProject } from 'vitest/node';

export const REDIS_HOST = '127.0.0.1';
export const REDIS_PORT = 6390;
const PIDFILE = `/tmp/redis-${REDIS_PORT}.pid`;
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

export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  project.provide('redisPort', REDIS_PORT);
  process.env.REDIS_PORT = String(REDIS_PORT);

  if (await ping(REDIS_PORT)) return undefined; // someone else's server: use it, leave it alone

  if (!redisInstalled()) throw new Error(INSTALL_REDIS);

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

  // Ours only if the pidfile was written by this start (a concurrent run may
  // have won the port, in which case our daemon exited and the pidfile is theirs).
  const after = readPid();
  const ours = after !== undefined && (before === undefined || after.pid !== before.pid || after.mtimeMs !== before.mtimeMs);
  if (!ours) return undefined;

  return async function teardown(): Promise<void> {
    if (!alive(after.pid)) return;
    process.kill(after.pid, 'SIGTERM');
    await until(async () => !alive(after.pid), 10_000, `redis-server (pid ${after.pid}) did not stop within 10 s`);
  };
}
