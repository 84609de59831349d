/**
 * Shutdown with a real child process (SPEC semantic 9, issue 5). The
 * fixtures import the BUILT package (dist/, through the package's own name)
 * exactly as an app would:
 *
 * - test/fixtures/sigterm-app.mjs: a node:http server with the documented
 *   SIGTERM recipe (server.close(), then drain({ timeout }), log the summary,
 *   exit). Deferred work in flight at SIGTERM completes or is reported
 *   abandoned with its name; the summary counts are exact; nothing is lost.
 * - test/fixtures/beforeexit-app.mjs: a script whose pending work holds
 *   nothing open; at 'beforeExit' it is reported abandoned.
 *
 * No sleeps: the test waits for the child's own events on stdout.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { get } from '../support/client.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const fixture = (name: string) => join(root, 'test', 'fixtures', name);

interface Event {
  event: string;
  [key: string]: unknown;
}

interface Child {
  readonly events: Event[];
  stderr(): string;
  /** Resolves with the first event (already seen or to come) matching; rejects if the child exits first. */
  waitFor(match: (event: Event) => boolean, what: string): Promise<Event>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal: NodeJS.Signals): void;
}

function newestIn(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestIn(path) : statSync(path).mtimeMs);
  }
  return newest;
}

function startChild(name: string, env: Record<string, string> = {}): Child {
  const proc = spawn(process.execPath, [fixture(name)], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events: Event[] = [];
  let stderr = '';
  let buffered = '';
  let exitedFlag = false;
  const waiters: { match: (event: Event) => boolean; resolve: (event: Event) => void; reject: (error: Error) => void; what: string }[] = [];
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.trim() === '') continue;
      let event: Event;
      try {
        event = JSON.parse(line) as Event;
      } catch {
        event = { event: 'unparsed', line };
      }
      events.push(event);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i]!.match(event)) {
          waiters[i]!.resolve(event);
          waiters.splice(i, 1);
        }
      }
    }
  });
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('close', (code, signal) => {
      exitedFlag = true;
      for (const waiter of waiters.splice(0)) {
        waiter.reject(new Error(`the child exited before ${waiter.what}; stdout: ${JSON.stringify(events)}; stderr: ${stderr}`));
      }
      resolve({ code, signal });
    });
  });
  return {
    events,
    stderr: () => stderr,
    waitFor(match, what) {
      const seen = events.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      if (exitedFlag) return Promise.reject(new Error(`the child exited before ${what}`));
      return new Promise((resolve, reject) => waiters.push({ match, resolve, reject, what }));
    },
    exited,
    kill: (signal) => void proc.kill(signal),
  };
}

/** A request whose response never finishes; resolves once the headers arrived. */
function openRequest(port: number, path: string): Promise<void> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.on('error', () => undefined);
      res.resume();
      resolve();
    });
    req.on('error', () => resolve());
    req.end();
  });
}

const named = (events: Event[], kind: string, name: string) => events.filter((e) => e.event === kind && e.name === name);

beforeAll(() => {
  // The fixtures run the built package: build it only when dist/ is missing or older than src/.
  const outputs = ['index.js', 'node.js'].map((file) => join(root, 'dist', file));
  const newestSource = newestIn(join(root, 'src'));
  if (outputs.every((file) => existsSync(file) && statSync(file).mtimeMs >= newestSource)) return;
  try {
    execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'pipe' });
  } catch (error) {
    // tsup writes the JavaScript before the declarations: a declaration error
    // elsewhere in src/ (checked by `npm run typecheck`) does not stop these
    // fixtures, which only run the JavaScript. Anything else does.
    const fresh = outputs.every((file) => existsSync(file) && statSync(file).mtimeMs >= newestSource);
    if (!fresh) throw error;
    const stderr = String((error as { stderr?: unknown }).stderr ?? '');
    if (!stderr.includes('DTS Build error')) throw error;
  }
}, 180_000);

describe('SIGTERM with the documented recipe (real child process)', () => {
  it('in-flight deferred work completes or is reported abandoned with its name; the summary is exact', async () => {
    const child = startChild('sigterm-app.mjs', { DRAIN_TIMEOUT_MS: '1500' });
    try {
      const { port } = (await child.waitFor((e) => e.event === 'listening', 'listening')) as Event & { port: number };

      // Quick work, done long before the signal.
      const quick = ['1', '2', '3'];
      for (const reply of await Promise.all(quick.map((id) => get(port, `/quick?id=${id}`)))) expect(reply).toEqual({ status: 200, body: 'ok' });
      // Work still running when the signal arrives.
      const inflight = ['1', '2', '3'];
      const failing = ['1', '2'];
      const slow = ['1', '2'];
      const replies = await Promise.all([
        ...inflight.map((id) => get(port, `/inflight?id=${id}`)),
        ...failing.map((id) => get(port, `/failing?id=${id}`)),
        ...slow.map((id) => get(port, `/slow?id=${id}`)),
      ]);
      for (const reply of replies) expect(reply).toEqual({ status: 200, body: 'ok' });
      // A response still open: its callback is held by its scope.
      await openRequest(port, '/open?id=1');
      await child.waitFor((e) => e.event === 'holding', 'the open response');

      const started = [...inflight.map((id) => `inflight-${id}`), ...failing.map((id) => `failing-${id}`), ...slow.map((id) => `slow-${id}`)];
      await Promise.all([
        ...quick.map((id) => child.waitFor((e) => e.event === 'done' && e.name === `quick-${id}`, `quick-${id} done`)),
        ...started.map((name) => child.waitFor((e) => e.event === 'started' && e.name === name, `${name} started`)),
      ]);
      const beforeSignal = child.events.length;
      child.kill('SIGTERM');
      const exit = await child.exited;
      const events = child.events;
      const after = events.slice(beforeSignal);

      // The recipe exits 1 when something was abandoned; the library writes nothing to stderr.
      expect(exit).toEqual({ code: 1, signal: null });
      expect(child.stderr()).toBe('');
      expect(events.filter((e) => e.event === 'unparsed')).toEqual([]);

      // The summary, printed last, counts exactly what settled during the drain.
      const drained = events.filter((e) => e.event === 'drained');
      expect(drained).toHaveLength(1);
      expect(events.at(-1)).toBe(drained[0]);
      expect(drained[0]).toEqual({
        event: 'drained',
        completed: inflight.length,
        failed: failing.length,
        abandoned: slow.length * 2 + 1,
        stats: { queued: 0, running: 0, completed: quick.length + inflight.length, failed: failing.length, dropped: 0, abandoned: slow.length * 2 + 1 },
      });

      // In flight at SIGTERM and finished during the drain.
      for (const id of inflight) {
        expect(named(after, 'done', `inflight-${id}`)).toHaveLength(1);
        expect(named(events, 'error', `inflight-${id}`)).toEqual([]);
      }
      for (const id of failing) {
        const reports = named(after, 'error', `failing-${id}`);
        expect(reports).toHaveLength(1);
        expect(reports[0]).toMatchObject({ phase: 'callback', message: `failing-${id} failed while draining` });
      }
      // Running at the deadline: signal aborted with the reported error, reported abandoned by name.
      for (const id of slow) {
        expect(named(after, 'aborted', `slow-${id}`)).toEqual([{ event: 'aborted', name: `slow-${id}`, code: 'ERR_DEFER_ABANDONED' }]);
        expect(named(after, 'error', `slow-${id}`)).toEqual([
          expect.objectContaining({ phase: 'abandoned', code: 'ERR_DEFER_ABANDONED', message: expect.stringContaining(`"slow-${id}"`) }),
        ]);
        // Waiting behind it in its sequential scope: never started, reported abandoned.
        expect(named(events, 'done', `after-slow-${id}`)).toEqual([]);
        expect(named(after, 'error', `after-slow-${id}`)).toEqual([expect.objectContaining({ phase: 'abandoned', code: 'ERR_DEFER_ABANDONED' })]);
      }
      // Held by a response that never finished: never started, reported abandoned.
      expect(named(events, 'done', 'open-1')).toEqual([]);
      expect(named(after, 'error', 'open-1')).toEqual([expect.objectContaining({ phase: 'abandoned', code: 'ERR_DEFER_ABANDONED' })]);

      // Nothing lost silently: every deferred callback either completed or was reported, exactly once.
      const all = [
        ...quick.map((id) => `quick-${id}`),
        ...inflight.map((id) => `inflight-${id}`),
        ...failing.map((id) => `failing-${id}`),
        ...slow.flatMap((id) => [`slow-${id}`, `after-slow-${id}`]),
        'open-1',
      ];
      for (const name of all) {
        expect({ name, fates: named(events, 'done', name).length + named(events, 'error', name).length }).toEqual({ name, fates: 1 });
      }
      const reportedNames = events.filter((e) => e.event === 'error' || e.event === 'done').map((e) => e.name);
      expect(new Set(reportedNames)).toEqual(new Set(all));
    } finally {
      child.kill('SIGKILL');
      await child.exited;
    }
  });

  it('work pending with nothing holding the loop open is reported abandoned at beforeExit', async () => {
    const child = startChild('beforeexit-app.mjs');
    const exit = await child.exited;
    const events = child.events;

    // The process ended by itself: the library holds nothing open when idle
    // (a pending callback timeout kept it alive only until it fired).
    expect(exit).toEqual({ code: 0, signal: null });
    expect(child.stderr()).toBe('');
    expect(named(events, 'done', 'quick')).toHaveLength(1);
    expect(named(events, 'error', 'timed')).toEqual([expect.objectContaining({ phase: 'timeout', code: 'ERR_DEFER_TIMEOUT' })]);

    const beforeExit = events.findIndex((e) => e.event === 'beforeExit');
    expect(beforeExit).toBeGreaterThan(events.findIndex((e) => e.event === 'script-end'));
    expect(beforeExit).toBeGreaterThan(events.findIndex((e) => e.name === 'timed'));
    const atExit = events.slice(beforeExit);
    // Running, never settling: its signal is aborted with the reported error.
    expect(named(atExit, 'aborted', 'stuck')).toEqual([{ event: 'aborted', name: 'stuck', code: 'ERR_DEFER_ABANDONED' }]);
    for (const name of ['stuck', 'behind-stuck', 'in-open-scope', null]) {
      expect({ name, reports: named(atExit, 'error', name as string) }).toEqual({
        name,
        reports: [expect.objectContaining({ phase: 'abandoned', code: 'ERR_DEFER_ABANDONED', message: expect.stringMatching(/the process reached beforeExit with nothing left to keep it alive.*can never happen/) })],
      });
    }
    expect(named(events, 'done', 'behind-stuck')).toEqual([]);
    expect(named(events, 'done', 'in-open-scope')).toEqual([]);
    expect(events.filter((e) => e.event === 'error')).toHaveLength(5);
    expect(events.at(-1)).toEqual({
      event: 'exit',
      code: 0,
      stats: { queued: 0, running: 0, completed: 1, failed: 1, dropped: 0, abandoned: 4 },
    });
  });

  it('docs/reliability.md shows the recipe exactly as the fixture runs it', () => {
    const app = readFileSync(fixture('sigterm-app.mjs'), 'utf8');
    const start = app.indexOf('// --- recipe: graceful shutdown ---');
    const end = app.indexOf('// --- end recipe ---');
    expect(start).toBeGreaterThanOrEqual(0);
    expect(end).toBeGreaterThan(start);
    const recipe = app.slice(app.indexOf('\n', start) + 1, end).trimEnd();
    expect(recipe).toContain('await drain({ timeout: DRAIN_TIMEOUT_MS })');
    const docs = readFileSync(join(root, 'docs', 'reliability.md'), 'utf8');
    expect(docs).toContain(recipe);
  });
});
