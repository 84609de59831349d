/**
 * Fault injection (SPEC semantics 4 and 9, issue 5): well over 1 000 deferred
 * callbacks that throw, reject, throw non-Errors, return broken thenables,
 * hang past their timeout (with and without acting after it) or defer more
 * work, behind real Express 5, Koa 3 and node:http servers on 127.0.0.1.
 *
 * The process must never crash or see an unhandled rejection, every failure
 * must reach the scope's onError exactly once (counted by a unique name per
 * callback), every healthy callback must run exactly once, and deferStats()
 * must agree. Timeouts use an injected clock: nothing waits for real time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  configureDefer,
  defer,
  deferStats,
  DeferError,
  drain,
  type DeferContext,
  type DeferErrorInfo,
  type DeferOptions,
} from '../../src/index.js';
import { harness, type Running } from '../support/adapters.js';
import { get } from '../support/client.js';
import { DEFAULTS, drainWithClock, fakeClock, prng, tick, until, watchProcess, type FakeClock } from './support.js';

const KINDS = [
  'ok-sync',
  'ok-async',
  'ok-thenable',
  'throw-error',
  'throw-string',
  'throw-undefined',
  'throw-null',
  'throw-object',
  'reject-error',
  'reject-undefined',
  'reject-object',
  'bad-thenable',
  'hang',
  'hang-late-reject',
  'hang-late-resolve',
  'nested',
] as const;
type Kind = (typeof KINDS)[number];

type Expect = 'ok' | 'fail' | 'timeout' | 'skip';

interface Entry {
  id: string;
  kind: Kind;
  always: boolean;
  expect: Expect;
  /** What a failing callback throws or rejects with. */
  value?: unknown;
  runs: number;
  /** `context.name` as the callback saw it. */
  seenName?: string;
  signal?: AbortSignal;
  depth: number;
  /** What a 'nested' callback defers when it runs (planned up front, so the mix is the same every run). */
  children: Entry[];
}

interface Report {
  error: unknown;
  info: DeferErrorInfo;
}

function expectFor(kind: Kind): Exclude<Expect, 'skip'> {
  if (kind.startsWith('ok') || kind === 'nested') return 'ok';
  if (kind.startsWith('hang')) return 'timeout';
  return 'fail';
}

function failureValue(kind: Kind, id: string): unknown {
  switch (kind) {
    case 'throw-error':
    case 'reject-error':
      return new Error(`failure ${id}`);
    case 'throw-string':
      return `failure ${id}`;
    case 'throw-object':
    case 'reject-object':
    case 'bad-thenable':
      return { failure: id };
    case 'throw-null':
      return null;
    default:
      return undefined;
  }
}

const SERVERS = [
  { harness: 'express 5', mode: 'sequential' },
  { harness: 'express 5', mode: 'parallel' },
  { harness: 'koa 3', mode: 'sequential' },
  { harness: 'koa 3', mode: 'parallel' },
  { harness: 'node:http', mode: 'sequential' },
  { harness: 'node:http', mode: 'parallel' },
] as const;

const REQUESTS_PER_SERVER = 40;
/** The parallel servers' default per-callback timeout (middleware option). */
const SCOPE_TIMEOUT = 40;
/** How far the fake clock moves per event-loop turn while draining: past every timeout in use. */
const CLOCK_STEP = 50;

describe('fault injection across Express 5, Koa 3 and node:http', () => {
  const ledger = new Map<string, Entry>();
  const reports = new Map<string, Report[]>();
  const unnamed: Report[] = [];
  const globalReports: Report[] = [];
  const replies: { id: string; status: number; expected: number; body: string }[] = [];
  const running: Running[] = [];
  const plans = new Map<string, { status: number; entries: Entry[] }>();
  const late = { expected: 0, done: 0 };
  let clock: FakeClock;
  let watch: ReturnType<typeof watchProcess>;

  const onError = (error: unknown, info: DeferErrorInfo) => {
    const report = { error, info };
    if (info.name === undefined) unnamed.push(report);
    else {
      const list = reports.get(info.name) ?? [];
      list.push(report);
      reports.set(info.name, list);
    }
  };

  beforeAll(() => {
    watch = watchProcess();
    clock = fakeClock();
    // Scope handlers take every error: the process-wide one must never be called.
    configureDefer({ onError: (error, info) => void globalReports.push({ error, info }) });
  });

  afterAll(async () => {
    await Promise.all(running.map((r) => r.close()));
    clock.restore();
    configureDefer(DEFAULTS);
    watch.stop();
    await drain();
  });

  /** The callback for one ledger entry. */
  function callback(entry: Entry, parallel: boolean): (ctx: DeferContext) => unknown {
    const { kind, value } = entry;
    return (ctx: DeferContext) => {
      entry.runs++;
      entry.seenName = ctx.name;
      switch (kind) {
        case 'ok-sync':
          return 42;
        case 'ok-async':
          return (async () => {
            await tick();
            await Promise.resolve();
          })();
        case 'ok-thenable':
          return { then: (resolve: (v: unknown) => void) => setImmediate(resolve, 'done') };
        case 'throw-error':
        case 'throw-string':
        case 'throw-undefined':
        case 'throw-null':
        case 'throw-object':
          throw value;
        case 'reject-error':
          return (async () => {
            await tick();
            throw value;
          })();
        case 'reject-undefined':
        case 'reject-object':
          return Promise.reject(value);
        case 'bad-thenable':
          return {
            get then() {
              throw value;
            },
          };
        case 'hang':
          entry.signal = ctx.signal;
          return new Promise(() => undefined);
        case 'hang-late-reject':
        case 'hang-late-resolve': {
          const signal = ctx.signal;
          entry.signal = signal;
          late.expected++;
          // Ignores its deadline and settles afterwards: must never be reported or counted again.
          return new Promise((resolve, reject) => {
            signal.addEventListener('abort', () =>
              setImmediate(() => {
                late.done++;
                if (kind === 'hang-late-reject') reject(new Error(`late ${entry.id}`));
                else resolve('late');
              }),
            );
          });
        }
        case 'nested':
          for (const child of entry.children) defer(callback(child, parallel), options(child, parallel));
          return undefined;
      }
    };
  }

  /** Creates a ledger entry with a random kind. */
  function plan(id: string, passes: boolean, rng: ReturnType<typeof prng>, depth: number, forced?: Kind, parentRuns = true): Entry {
    const kinds = depth >= 2 ? KINDS.filter((k) => k !== 'nested') : KINDS;
    const kind = forced ?? rng.pick(kinds);
    const always = rng.chance(0.3);
    const entry: Entry = {
      id,
      kind,
      always,
      expect: parentRuns && (passes || always) ? expectFor(kind) : 'skip',
      value: failureValue(kind, id),
      runs: 0,
      depth,
      children: [],
    };
    ledger.set(id, entry);
    if (kind === 'nested') {
      // Nested callbacks join the scope under its outcome: they run if it passes or they are `always`.
      const count = 1 + rng.int(3);
      for (let j = 0; j < count; j++) entry.children.push(plan(`${id}.${j}`, passes, rng, depth + 1, undefined, entry.expect !== 'skip'));
    }
    return entry;
  }

  function options(entry: Entry, parallel: boolean): DeferOptions {
    const opts: DeferOptions = { name: entry.id };
    if (entry.always) opts.always = true;
    if (entry.kind.startsWith('hang')) {
      // Sequential servers have no default timeout: the callback brings its own.
      // Parallel servers default to SCOPE_TIMEOUT; half the hangs override it.
      if (!parallel || entry.id.length % 2 === 0) opts.timeout = 10 + (entry.id.length % 30);
    } else if (parallel) {
      // Healthy work on a server with a default timeout opts out of it (a per-callback timeout wins).
      opts.timeout = 2_147_483_647;
    }
    return opts;
  }

  it('serves every request while its deferred callbacks fail in every way', async () => {
    const rng = prng(0x5eed);
    const before = deferStats();

    for (const [s, server] of SERVERS.entries()) {
      const parallel = server.mode === 'parallel';
      const route = (status: number) => ({
        status,
        run: async ({ url }: { url: string }) => {
          const id = new URL(url, 'http://x').searchParams.get('id')!;
          const requestPlan = plans.get(id);
          if (requestPlan === undefined) return;
          for (const entry of requestPlan.entries) {
            defer(callback(entry, parallel), options(entry, parallel));
            // Random awaits between defer() calls interleave the requests.
            const pause = rng.int(3);
            if (pause === 1) await Promise.resolve();
            else if (pause === 2) await tick();
          }
        },
      });
      running.push(
        await harness(server.harness).listen(
          { '/ok': route(200), '/bad': route(500) },
          parallel ? { mode: 'parallel', timeout: SCOPE_TIMEOUT, onError } : { onError },
        ),
      );
      for (let r = 0; r < REQUESTS_PER_SERVER; r++) {
        const id = `s${s}r${r}`;
        const status = rng.chance(0.2) ? 500 : 200;
        const entries: Entry[] = [];
        const count = 4 + rng.int(3);
        for (let k = 0; k < count; k++) entries.push(plan(`${id}c${k}`, status < 400, rng, 0));
        plans.set(id, { status, entries });
      }
    }

    // Fire the requests in waves, every server at once.
    const ids = [...plans.keys()];
    const wave = 30;
    for (let i = 0; i < ids.length; i += wave) {
      await Promise.all(
        ids.slice(i, i + wave).map(async (id) => {
          const { status } = plans.get(id)!;
          const server = Number(id.slice(1, id.indexOf('r')));
          const reply = await get(running[server]!.port, `${status < 400 ? '/ok' : '/bad'}?id=${id}`);
          replies.push({ id, status: reply.status, expected: status, body: reply.body });
        }),
      );
    }

    const summary = await drainWithClock(clock, CLOCK_STEP);
    // Callbacks that settle after their deadline do so a turn later: wait for all of them.
    await until(() => late.done === late.expected, 'the late settlements');
    await tick();

    const entries = [...ledger.values()];
    const count = (e: Expect) => entries.filter((entry) => entry.expect === e).length;
    const after = deferStats();

    // The scale the issue asks for.
    expect(entries.filter((e) => e.expect !== 'skip').length).toBeGreaterThanOrEqual(1_000);
    expect(entries.filter((e) => e.depth > 0 && e.expect !== 'skip').length).toBeGreaterThan(50);
    for (const kind of KINDS) expect(entries.some((e) => e.kind === kind && e.expect !== 'skip')).toBe(true);

    // No failure reached a client: every response is the one the route sent.
    expect(replies).toHaveLength(ids.length);
    for (const reply of replies) expect(reply).toEqual({ id: reply.id, status: reply.expected, expected: reply.expected, body: 'ok' });

    // Nothing escaped into the process.
    expect(watch.events).toEqual([]);
    expect(globalReports).toEqual([]);
    expect(unnamed).toEqual([]);

    // Every callback ran as often as its fate says, every failure was reported exactly once.
    for (const entry of entries) {
      const got = reports.get(entry.id) ?? [];
      const outcomeStatus = plans.get(entry.id.slice(0, entry.id.indexOf('c')))!.status;
      if (entry.expect === 'skip') {
        expect({ id: entry.id, runs: entry.runs, reports: got.length }).toEqual({ id: entry.id, runs: 0, reports: 0 });
        continue;
      }
      expect({ id: entry.id, runs: entry.runs, name: entry.seenName }).toEqual({ id: entry.id, runs: 1, name: entry.id });
      if (entry.expect === 'ok') {
        expect({ id: entry.id, reports: got }).toEqual({ id: entry.id, reports: [] });
        continue;
      }
      expect({ id: entry.id, reports: got.length }).toEqual({ id: entry.id, reports: 1 });
      const { error, info } = got[0]!;
      expect(info).toEqual({
        phase: entry.expect === 'fail' ? 'callback' : 'timeout',
        name: entry.id,
        outcome: { kind: 'http', statusCode: outcomeStatus, ok: outcomeStatus < 400, aborted: false },
      });
      expect(JSON.parse(JSON.stringify(info))).toEqual(info);
      if (entry.expect === 'fail') {
        // Exactly the value thrown or rejected, unwrapped even when it is not an Error.
        expect(Object.is(error, entry.value)).toBe(true);
      } else {
        expect(error).toBeInstanceOf(DeferError);
        expect((error as DeferError).code).toBe('ERR_DEFER_TIMEOUT');
        expect(entry.signal?.aborted).toBe(true);
        expect(entry.signal?.reason).toBe(error);
      }
    }
    const named = new Set(entries.map((e) => e.id));
    for (const name of reports.keys()) expect(named.has(name)).toBe(true);

    // The counters agree with the ledger; a late settlement is never counted again.
    expect(late.expected).toBeGreaterThan(0);
    expect({
      completed: after.completed - before.completed,
      failed: after.failed - before.failed,
      dropped: after.dropped - before.dropped,
      abandoned: after.abandoned - before.abandoned,
      queued: after.queued,
      running: after.running,
    }).toEqual({ completed: count('ok'), failed: count('fail') + count('timeout'), dropped: 0, abandoned: 0, queued: 0, running: 0 });
    expect(summary.abandoned).toBe(0);
    expect(summary.completed).toBeLessThanOrEqual(count('ok'));
  });

  it('keeps serving afterwards, and runs new work normally', async () => {
    expect(running).toHaveLength(SERVERS.length);
    const rng = prng(7);
    const before = deferStats();
    const fresh: Entry[] = [];
    for (let s = 0; s < SERVERS.length; s++) {
      const id = `s${s}r999`;
      const entries = [plan(`${id}c0`, true, rng, 0, 'ok-async'), plan(`${id}c1`, true, rng, 0, 'ok-sync')];
      fresh.push(...entries);
      plans.set(id, { status: 200, entries });
      expect(await get(running[s]!.port, `/ok?id=${id}`)).toEqual({ status: 200, body: 'ok' });
    }
    await drainWithClock(clock, CLOCK_STEP);
    expect(fresh.map((e) => e.runs)).toEqual(fresh.map(() => 1));
    expect(fresh.every((e) => !reports.has(e.id))).toBe(true);
    const after = deferStats();
    expect(after.completed - before.completed).toBe(fresh.length);
    expect(after.failed).toBe(before.failed);
    expect(watch.events).toEqual([]);
  });
});
