/**
 * request-defer/bullmq against a real Redis (started by ./global-setup.ts on
 * 127.0.0.1:6390), real BullMQ Queues and Workers, and real Express 5, Koa 3
 * and node:http servers on loopback.
 *
 * The rule under test: a job reaches Redis only after the response finished
 * with a passing outcome (or always, if asked); a failed request never leaves
 * a job behind, checked with the queue's own job counts. A dead Redis never
 * blocks a response or the scheduler: the add is bounded by the callback's
 * timeout, and drain() reports an enqueue that did not happen by job name.
 *
 * Waiting is done with drain(), Worker events and job counts, never a sleep.
 */
import { readFileSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Queue, Worker, type ConnectionOptions, type Job } from 'bullmq';
import express from 'express5';
import Koa from 'koa3';
import { afterEach, beforeEach, describe, expect, inject, it, vi } from 'vitest';
import { configureDefer, defer, deferStats, drain, forget, withDefer, type DeferErrorInfo } from '../../src/index.js';
import { DEFAULT_DISPATCH_TIMEOUT, deferDispatch } from '../../src/bullmq.js';
import type { DeferredCallback } from '../../src/core/engine.js';
import { deferMiddleware } from '../../src/express.js';
import { deferMiddleware as koaDefer } from '../../src/koa.js';
import { withDeferHandler } from '../../src/node.js';
import { fakeDefer } from '../../src/testing.js';

const connection: ConnectionOptions = { host: '127.0.0.1', port: inject('redisPort') };

// ---------------------------------------------------------------------------
// Fixtures: queues, workers, servers and connections opened by a test are
// closed after it (queues obliterated), so every test starts from an empty
// Redis and vitest exits.

const cleanups: (() => Promise<unknown>)[] = [];
let serial = 0;
let baseline = deferStats();

beforeEach(() => {
  baseline = deferStats();
});

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/**
 * Waits with drain() until no deferred work is pending, then returns what
 * settled since the test began. (drain()'s own summary counts only what
 * settled during that call, and an add can finish before the test reaches
 * drain(): Redis may answer before the client has read the response.)
 */
async function drained(): Promise<{ completed: number; failed: number; abandoned: number }> {
  await drain();
  const now = deferStats();
  return {
    completed: now.completed - baseline.completed,
    failed: now.failed - baseline.failed,
    abandoned: now.abandoned - baseline.abandoned,
  };
}

/** A queue with a name no other test (or run) uses, on the test Redis. */
function freshQueue(): Queue {
  const queue = new Queue(`request-defer-test-${process.pid}-${++serial}`, { connection });
  cleanups.push(async () => {
    await queue.obliterate({ force: true });
    await queue.close();
  });
  return queue;
}

interface Seen {
  name: string;
  data: unknown;
}

/**
 * A Worker on `queue` that records what it processes; `processed(n)`
 * resolves once `n` jobs have completed.
 */
function startWorker(queue: Queue): { seen: Seen[]; processed(n: number): Promise<Seen[]> } {
  const seen: Seen[] = [];
  const waiters: { n: number; resolve: (seen: Seen[]) => void }[] = [];
  const worker = new Worker(
    queue.name,
    async (job: Job) => {
      seen.push({ name: job.name, data: job.data });
    },
    { connection },
  );
  worker.on('completed', () => {
    for (const w of waiters.filter((w) => seen.length >= w.n)) w.resolve(seen);
  });
  cleanups.push(() => worker.close());
  return {
    seen,
    processed: (n) =>
      seen.length >= n ? Promise.resolve(seen) : new Promise((resolve) => waiters.push({ n, resolve })),
  };
}

/** Every job state's count in `queue` (waiting, active, completed, failed, delayed, …). */
async function counts(queue: Queue): Promise<Record<string, number>> {
  return queue.getJobCounts();
}

function total(jobCounts: Record<string, number>): number {
  return Object.values(jobCounts).reduce((a, b) => a + b, 0);
}

/**
 * A queue pointed at a loopback port nothing listens on.
 * `failFast`: ioredis gives up at the first refused connection, so add() rejects.
 * Otherwise BullMQ's default: reconnect forever, add() waits for Redis forever.
 */
async function deadQueue(failFast: boolean): Promise<{ queue: Queue; errors: unknown[] }> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const queue = new Queue(`request-defer-dead-${++serial}`, {
    connection: failFast
      ? { host: '127.0.0.1', port, retryStrategy: () => null, enableOfflineQueue: false }
      : { host: '127.0.0.1', port },
  });
  // BullMQ re-emits connection errors on the queue; an EventEmitter 'error'
  // without a listener would crash the process.
  const errors: unknown[] = [];
  queue.on('error', (error) => errors.push(error));
  cleanups.push(() => queue.close());
  return { queue, errors };
}

interface Reported {
  error: unknown;
  info: DeferErrorInfo;
}

function collector(): { reported: Reported[]; onError: (error: unknown, info: DeferErrorInfo) => void } {
  const reported: Reported[] = [];
  return { reported, onError: (error, info) => void reported.push({ error, info }) };
}

/** Serves `listener` on 127.0.0.1; closed after the test. */
async function serve(listener: RequestListener): Promise<number> {
  const server = createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return (server.address() as AddressInfo).port;
}

interface Reply {
  status: number;
  body: string;
}

function send(port: number, method: string, path: string, json?: unknown): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const body = json === undefined ? undefined : JSON.stringify(json);
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method,
        agent: false,
        headers: body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const get = (port: number, path: string) => send(port, 'GET', path);

/** A GET whose client destroys its socket once `ready` resolves (the handler is running). */
function abortedGet(port: number, path: string, ready: Promise<unknown>): Promise<void> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false });
    req.on('error', () => resolve());
    req.on('close', () => resolve());
    req.end();
    void ready.then(() => req.destroy());
  });
}

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

const JOB_NAME = /^welcome-mail#\d+$/;

// ---------------------------------------------------------------------------

describe('deferDispatch on Express 5', () => {
  /** The app every Express test uses: each route dispatches one welcome-mail, then answers its way. */
  async function app(queue: Queue, onError: (error: unknown, info: DeferErrorInfo) => void) {
    const dispatched: DeferredCallback[] = [];
    const handlerRunning = gate();
    const release = gate();
    const a = express();
    a.use(deferMiddleware({ onError }));
    a.get('/ok', (req, res) => {
      dispatched.push(deferDispatch(queue, 'welcome-mail', { userId: 1 }));
      res.status(201).json({ id: 1 });
    });
    a.get('/client-error', (req, res) => {
      dispatched.push(deferDispatch(queue, 'welcome-mail', { userId: 2 }));
      res.status(422).json({ error: 'invalid e-mail' });
    });
    a.get('/server-error', async () => {
      dispatched.push(deferDispatch(queue, 'welcome-mail', { userId: 3 }));
      throw new Error('database down'); // Express 5 answers 500
    });
    a.get('/always', async () => {
      dispatched.push(deferDispatch(queue, 'audit', { event: 'signup-failed' }).always());
      throw new Error('database down');
    });
    a.get('/twice', (req, res) => {
      dispatched.push(deferDispatch(queue, 'welcome-mail', { userId: 4 }));
      dispatched.push(deferDispatch(queue, 'welcome-mail', { userId: 5 }));
      res.json({ ok: true });
    });
    a.get('/slow', async (req, res) => {
      dispatched.push(deferDispatch(queue, 'welcome-mail', { userId: 6 }));
      dispatched.push(deferDispatch(queue, 'audit', { event: 'aborted' }).always());
      handlerRunning.open();
      await release.promise;
      res.json({ late: true });
    });
    const port = await serve(a);
    return { port, dispatched, handlerRunning, release };
  }

  it('enqueues exactly one job after a successful response, and a Worker gets its data', async () => {
    const queue = freshQueue();
    const worker = startWorker(queue);
    const { reported, onError } = collector();
    const { port, dispatched } = await app(queue, onError);

    const reply = await get(port, '/ok');
    expect(reply).toEqual({ status: 201, body: '{"id":1}' });
    expect(await drained()).toEqual({ completed: 1, failed: 0, abandoned: 0 });

    expect(await worker.processed(1)).toEqual([{ name: 'welcome-mail', data: { userId: 1 } }]);
    expect(await counts(queue)).toMatchObject({ completed: 1 });
    expect(total(await counts(queue))).toBe(1);
    expect(dispatched).toHaveLength(1);
    expect(reported).toEqual([]);
  });

  it.each([
    ['a 4xx', '/client-error', 422],
    ['a 5xx', '/server-error', 500],
  ])('enqueues nothing after %s response', async (_label, path, status) => {
    const queue = freshQueue();
    const worker = startWorker(queue);
    const { reported, onError } = collector();
    const { port, dispatched } = await app(queue, onError);

    expect((await get(port, path)).status).toBe(status);
    expect(await drained()).toEqual({ completed: 0, failed: 0, abandoned: 0 });

    expect(dispatched).toHaveLength(1);
    const jobCounts = await counts(queue);
    expect(Object.keys(jobCounts).length).toBeGreaterThan(0);
    expect(total(jobCounts)).toBe(0);
    expect(worker.seen).toEqual([]);
    expect(reported).toEqual([]);
  });

  it('enqueues an .always() dispatch on a failed response', async () => {
    const queue = freshQueue();
    const worker = startWorker(queue);
    const { reported, onError } = collector();
    const { port, dispatched } = await app(queue, onError);

    expect((await get(port, '/always')).status).toBe(500);
    expect(await drained()).toEqual({ completed: 1, failed: 0, abandoned: 0 });

    expect(dispatched[0]!.isAlways).toBe(true);
    expect(await worker.processed(1)).toEqual([{ name: 'audit', data: { event: 'signup-failed' } }]);
    expect(total(await counts(queue))).toBe(1);
    expect(reported).toEqual([]);
  });

  it('enqueues nothing for an aborted request (the client destroyed its socket), except .always()', async () => {
    const queue = freshQueue();
    const worker = startWorker(queue);
    const { reported, onError } = collector();
    const { port, dispatched, handlerRunning, release } = await app(queue, onError);

    await abortedGet(port, '/slow', handlerRunning.promise);
    // The handler has dispatched and still holds the response: drain() waits
    // for the scope, whose outcome is decided when the server sees the close.
    expect(await drained()).toEqual({ completed: 1, failed: 0, abandoned: 0 });
    release.open();

    expect(dispatched.map((cb) => cb.isAlways)).toEqual([false, true]);
    expect(await worker.processed(1)).toEqual([{ name: 'audit', data: { event: 'aborted' } }]);
    const jobCounts = await counts(queue);
    expect(jobCounts).toMatchObject({ completed: 1 });
    expect(total(jobCounts)).toBe(1);
    expect(reported).toEqual([]);
  });

  it('names the callback after the job, and runs two dispatches of one job type in a request', async () => {
    const queue = freshQueue();
    const worker = startWorker(queue);
    const { reported, onError } = collector();
    const { port, dispatched } = await app(queue, onError);

    expect((await get(port, '/twice')).status).toBe(200);
    expect(await drained()).toEqual({ completed: 2, failed: 0, abandoned: 0 });

    const [first, second] = dispatched;
    expect(first!.name).toMatch(JOB_NAME);
    expect(second!.name).toMatch(JOB_NAME);
    expect(first!.name).not.toBe(second!.name);
    const seen = await worker.processed(2);
    expect(seen.map((s) => s.data)).toEqual(expect.arrayContaining([{ userId: 4 }, { userId: 5 }]));
    expect(seen.map((s) => s.name)).toEqual(['welcome-mail', 'welcome-mail']);
    expect(await counts(queue)).toMatchObject({ completed: 2 });
    expect(total(await counts(queue))).toBe(2);
    expect(reported).toEqual([]);
  });

  it('passes BullMQ job options through to queue.add()', async () => {
    const queue = freshQueue();
    const { onError } = collector();
    const a = express();
    a.use(deferMiddleware({ onError }));
    a.get('/', (req, res) => {
      deferDispatch(queue, 'welcome-mail', { userId: 7 }, { jobId: 'welcome-7', delay: 60_000 });
      res.end('ok');
    });
    const port = await serve(a);

    await get(port, '/');
    await drain();
    const job = await queue.getJob('welcome-7');
    expect(job?.data).toEqual({ userId: 7 });
    expect(job?.opts.delay).toBe(60_000);
    expect(await counts(queue)).toMatchObject({ delayed: 1 });
  });
});

describe('deferDispatch on Koa 3 and node:http', () => {
  it('Koa 3: one job after a success, none after a failure', async () => {
    const queue = freshQueue();
    const worker = startWorker(queue);
    const { reported, onError } = collector();
    const app = new Koa();
    app.silent = true;
    app.use(koaDefer({ onError }));
    app.use(async (ctx) => {
      deferDispatch(queue, 'welcome-mail', { path: ctx.path });
      if (ctx.path === '/fail') ctx.throw(503, 'maintenance');
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    const port = await serve(app.callback());

    expect((await get(port, '/fail')).status).toBe(503);
    expect(await drained()).toEqual({ completed: 0, failed: 0, abandoned: 0 });
    expect(total(await counts(queue))).toBe(0);

    expect((await get(port, '/ok')).status).toBe(201);
    expect(await drained()).toEqual({ completed: 1, failed: 0, abandoned: 0 });
    expect(await worker.processed(1)).toEqual([{ name: 'welcome-mail', data: { path: '/ok' } }]);
    expect(total(await counts(queue))).toBe(1);
    expect(reported).toEqual([]);
  });

  it('node:http: one job after a success, none after a failure', async () => {
    const queue = freshQueue();
    const worker = startWorker(queue);
    const { reported, onError } = collector();
    const port = await serve(
      withDeferHandler(
        (req: IncomingMessage, res: ServerResponse) => {
          deferDispatch(queue, 'welcome-mail', { url: req.url });
          res.statusCode = req.url === '/fail' ? 500 : 200;
          res.end();
        },
        { onError },
      ),
    );

    expect((await get(port, '/fail')).status).toBe(500);
    expect(await drained()).toEqual({ completed: 0, failed: 0, abandoned: 0 });
    expect(total(await counts(queue))).toBe(0);

    expect((await get(port, '/ok')).status).toBe(200);
    expect(await drained()).toEqual({ completed: 1, failed: 0, abandoned: 0 });
    expect(await worker.processed(1)).toEqual([{ name: 'welcome-mail', data: { url: '/ok' } }]);
    expect(total(await counts(queue))).toBe(1);
    expect(reported).toEqual([]);
  });
});

describe('deferDispatch with Redis down', () => {
  afterEach(() => {
    configureDefer({ concurrency: undefined });
    vi.useRealTimers();
  });

  it('reports a failed add as ERR_DEFER_ENQUEUE with the cause, and the server keeps answering', async () => {
    const { queue } = await deadQueue(true);
    const { reported, onError } = collector();
    let cb: DeferredCallback | undefined;
    const app = express();
    app.use(deferMiddleware({ onError }));
    app.get('/signup', (req, res) => {
      cb = deferDispatch(queue, 'welcome-mail', { userId: 1 });
      res.status(201).json({ id: 1 });
    });
    app.get('/health', (req, res) => res.json({ up: true }));
    const port = await serve(app);

    expect(await get(port, '/signup')).toEqual({ status: 201, body: '{"id":1}' });
    expect(await drained()).toEqual({ completed: 0, failed: 1, abandoned: 0 });

    expect(reported).toHaveLength(1);
    const { error, info } = reported[0]!;
    expect(error).toMatchObject({ name: 'DeferError', code: 'ERR_DEFER_ENQUEUE' });
    expect((error as Error).message).toContain('"welcome-mail"');
    expect((error as Error).message).toContain(queue.name);
    expect((error as Error).cause).toMatchObject({ code: 'ECONNREFUSED' });
    expect(info).toEqual({ phase: 'callback', name: cb!.name, outcome: { kind: 'http', statusCode: 201, ok: true, aborted: false } });
    expect(info.name).toMatch(JOB_NAME);

    expect(await get(port, '/health')).toEqual({ status: 200, body: '{"up":true}' });
    expect(deferStats()).toMatchObject({ running: 0, queued: 0 });
  });

  it('reports any rejection as ERR_DEFER_ENQUEUE with it as the cause, even one String() cannot convert', async () => {
    const reason = Object.assign(Object.create(null) as object, { code: 'ECONNREFUSED' });
    const { reported, onError } = collector();
    await withDefer(() => void deferDispatch({ name: 'mails', add: () => Promise.reject(reason) }, 'welcome-mail', {}), {
      await: true,
      onError,
    });
    expect(reported).toHaveLength(1);
    const { error, info } = reported[0]!;
    expect(error).toMatchObject({ name: 'DeferError', code: 'ERR_DEFER_ENQUEUE' });
    expect((error as Error).cause).toBe(reason);
    expect((error as Error).message).toContain('could not add job "welcome-mail" to queue "mails": an object.');
    expect(info.phase).toBe('callback');
  });

  it('bounds an add that waits for Redis by the timeout, so the scheduler moves on', async () => {
    // BullMQ's default: reconnect forever, the add never settles.
    const { queue, errors } = await deadQueue(false);
    const { reported, onError } = collector();
    configureDefer({ concurrency: 1 }); // the hanging add holds the only slot until its timeout
    let ranAfter = false;
    const app = express();
    app.use(deferMiddleware({ onError }));
    app.get('/signup', (req, res) => {
      deferDispatch(queue, 'welcome-mail', { userId: 1 }, undefined, { timeout: 150 });
      res.status(201).end();
    });
    app.get('/other', (req, res) => {
      defer(() => {
        ranAfter = true;
      });
      res.end();
    });
    const port = await serve(app);

    expect((await get(port, '/signup')).status).toBe(201);
    expect((await get(port, '/other')).status).toBe(200);
    expect(await drained()).toEqual({ completed: 1, failed: 1, abandoned: 0 });

    expect(ranAfter).toBe(true);
    expect(reported).toHaveLength(1);
    expect(reported[0]!.error).toMatchObject({ code: 'ERR_DEFER_TIMEOUT' });
    expect(reported[0]!.info.phase).toBe('timeout');
    expect(reported[0]!.info.name).toMatch(JOB_NAME);
    expect(deferStats()).toMatchObject({ running: 0, queued: 0 });
    expect(errors.length).toBeGreaterThan(0); // the queue saw the refused connection
  });

  it("uses the scope's timeout when the call sets none", async () => {
    const { queue } = await deadQueue(false);
    const { reported, onError } = collector();
    const app = express();
    app.use(deferMiddleware({ onError, timeout: 100 }));
    app.get('/', (req, res) => {
      deferDispatch(queue, 'welcome-mail', { userId: 1 });
      res.end();
    });
    const port = await serve(app);

    await get(port, '/');
    expect(await drained()).toEqual({ completed: 0, failed: 1, abandoned: 0 });
    expect(reported.map((r) => [r.info.phase, (r.error as { code?: string }).code])).toEqual([['timeout', 'ERR_DEFER_TIMEOUT']]);
    expect((reported[0]!.error as Error).message).toContain('100 ms');
  });

  it('bounds the add by 10 s when neither the call nor the scope sets a timeout', async () => {
    const { queue } = await deadQueue(false);
    const { reported, onError } = collector();
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const done = withDefer(() => void deferDispatch(queue, 'welcome-mail', { userId: 1 }), { onError, await: true });

    await vi.advanceTimersByTimeAsync(DEFAULT_DISPATCH_TIMEOUT - 1);
    expect(reported).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    await done;
    expect(DEFAULT_DISPATCH_TIMEOUT).toBe(10_000);
    expect(reported).toHaveLength(1);
    expect(reported[0]!.error).toMatchObject({ code: 'ERR_DEFER_TIMEOUT' });
    expect((reported[0]!.error as Error).message).toContain('10000 ms');
  });

  it('never delays the response, and drain({ timeout }) reports an enqueue that did not happen as abandoned, with the job name', async () => {
    const { queue } = await deadQueue(false);
    const { reported, onError } = collector();
    let cb: DeferredCallback | undefined;
    const app = express();
    app.use(deferMiddleware({ onError }));
    app.get('/signup', (req, res) => {
      cb = deferDispatch(queue, 'welcome-mail', { userId: 17 }, undefined, { timeout: 600_000 });
      res.status(201).json({ id: 17 });
    });
    const port = await serve(app);

    // The add waits for Redis (up to ten minutes here); the client does not.
    expect(await get(port, '/signup')).toEqual({ status: 201, body: '{"id":17}' });
    expect(await drain({ timeout: 100 })).toEqual({ completed: 0, failed: 0, abandoned: 1 });

    expect(reported).toHaveLength(1);
    const { error, info } = reported[0]!;
    expect(error).toMatchObject({ code: 'ERR_DEFER_ABANDONED' });
    expect((error as Error).message).toContain(cb!.name);
    expect(info.phase).toBe('abandoned');
    expect(info.name).toBe(cb!.name);
    expect(info.name).toMatch(JOB_NAME);
    expect(deferStats()).toMatchObject({ running: 0, queued: 0 });
  });
});

describe('deferDispatch input', () => {
  it('throws like defer() outside a scope and on bad arguments, registering nothing', async () => {
    const queue = freshQueue();
    const codeOf = (fn: () => unknown) => {
      try {
        fn();
      } catch (error) {
        return (error as { code?: string }).code;
      }
      return 'did not throw';
    };
    expect(codeOf(() => deferDispatch(queue, 'welcome-mail', {}))).toBe('ERR_DEFER_NO_SCOPE');
    await withDefer(
      () => {
        expect(codeOf(() => deferDispatch({} as Queue, 'welcome-mail', {}))).toBe('ERR_DEFER_INVALID_CALLBACK');
        expect(codeOf(() => deferDispatch(queue, '', {}))).toBe('ERR_DEFER_INVALID_OPTIONS');
        expect(codeOf(() => deferDispatch(queue, 'welcome-mail', {}, undefined, { timout: 5 } as never))).toBe('ERR_DEFER_INVALID_OPTIONS');
        expect(codeOf(() => deferDispatch(queue, 'welcome-mail', {}, undefined, { timeout: 0 }))).toBe('ERR_DEFER_INVALID_OPTIONS');
      },
      { await: true },
    );
    expect(await drained()).toEqual({ completed: 0, failed: 0, abandoned: 0 });
    expect(total(await counts(queue))).toBe(0);
  });

  it('an explicit name makes a dispatch replaceable and forgettable, like defer()', async () => {
    const queue = freshQueue();
    const worker = startWorker(queue);
    await withDefer(
      () => {
        deferDispatch(queue, 'recompute', { v: 1 }, undefined, { name: 'recompute-cart' });
        deferDispatch(queue, 'recompute', { v: 2 }, undefined, { name: 'recompute-cart' });
        const dropped = deferDispatch(queue, 'welcome-mail', { v: 3 });
        expect(forget(dropped.name)).toBe(true);
      },
      { await: true },
    );
    expect(await drained()).toEqual({ completed: 1, failed: 0, abandoned: 0 });
    expect(await worker.processed(1)).toEqual([{ name: 'recompute', data: { v: 2 } }]);
    expect(total(await counts(queue))).toBe(1);
  });
});

describe('deferDispatch under the testing fake', () => {
  it('fakeDefer() records the dispatch; runAll() performs the add only when the outcome passes', async () => {
    const queue = freshQueue();
    const fake = fakeDefer();
    try {
      const cb = deferDispatch(queue, 'welcome-mail', { userId: 9 });
      expect(fake.callbacks.map((c) => c.name)).toEqual([cb.name]);
      expect(cb.name).toMatch(JOB_NAME);
      expect(total(await counts(queue))).toBe(0); // recorded, not added

      await fake.runAll({ statusCode: 500, ok: false });
      expect(total(await counts(queue))).toBe(0);

      deferDispatch(queue, 'welcome-mail', { userId: 10 });
      await fake.runAll({ statusCode: 201 });
      const [job] = await queue.getJobs(['waiting']);
      expect(job?.data).toEqual({ userId: 10 });
      expect(total(await counts(queue))).toBe(1);
    } finally {
      fake.restore();
    }
  });
});

describe('docs/queues.md', () => {
  it('the signup example works against the local Redis', async () => {
    const mails = freshQueue();
    const worker = startWorker(mails);
    const log = { error: vi.fn() };
    const createUser = async (body: { email: string }) => ({ id: 42, email: body.email });

    // --- docs/queues.md example: begin
    const app = express();
    app.use(express.json());
    app.use(deferMiddleware({ onError: (error, info) => log.error({ err: error, job: info.name }, 'deferred work failed') }));

    app.post('/signup', async (req, res) => {
      const user = await createUser(req.body);
      deferDispatch(mails, 'welcome-mail', { userId: user.id });
      res.status(201).json(user);
    });
    // --- docs/queues.md example: end

    const port = await serve(app);
    expect(await send(port, 'POST', '/signup', { email: 'ada@example.com' })).toEqual({
      status: 201,
      body: '{"id":42,"email":"ada@example.com"}',
    });
    await drain();
    expect(await worker.processed(1)).toEqual([{ name: 'welcome-mail', data: { userId: 42 } }]);
    expect(log.error).not.toHaveBeenCalled();
  });

  it('shows the same code as the test above', () => {
    const between = (text: string, begin: string, end: string) => {
      const from = text.indexOf(begin);
      const to = text.indexOf(end, from);
      expect(from).toBeGreaterThanOrEqual(0);
      expect(to).toBeGreaterThan(from);
      return text
        .slice(from + begin.length, to)
        .split('\n')
        .map((line) => line.trim())
        .filter((line) => line !== '');
    };
    const test = readFileSync(new URL(import.meta.url), 'utf8');
    const docs = readFileSync(new URL('../../docs/queues.md', import.meta.url), 'utf8');
    const tested = between(test, '// --- docs/queues.md example: begin', '// --- docs/queues.md example: end');
    const shown = between(docs, '<!-- example: signup (tested in test/services/bullmq.test.ts) -->', '\n```\n');
    expect(tested.length).toBeGreaterThan(5);
    // The docs block has its imports and the queue's setup first, then exactly the tested code.
    expect(shown.slice(-tested.length)).toEqual(tested);
  });
});

