// A benchmark server, run in its own child process by bench/run.mjs.
//
//   node bench/server.mjs '<json config>'
//
// config: { framework: 'express' | 'koa', suite: 'throughput' | 'latency' | 'overload' variant?, defer? }
// It listens on 127.0.0.1 (ephemeral port) and prints `LISTENING <port>`.
// Routes under /__ are answered by a plain node:http layer in front of the
// app (never through the app's middleware):
//   /__cpu    process.cpuUsage() (user + system, µs, and each apart): CPU per
//             request is far less sensitive than req/s to other load on the machine
//   /__heap   gc (when --expose-gc) and report process.memoryUsage().heapUsed
//   /__stats  deferStats(), peak queued and peak heap seen by the sampler
//   /__drain  await drain(), then gc and report the heap
//   /__sample start sampling heap and queue every 20 ms (overload suite)
import { AsyncLocalStorage, AsyncResource } from 'node:async_hooks';
import { createServer } from 'node:http';
import { importPackage } from './lib/pkg.mjs';

const config = JSON.parse(process.argv[2] ?? '{}');
const { framework, suite, variant } = config;

const HELLO = 'hello world';
const noop = () => {};
const sleep20 = () => new Promise((resolve) => setTimeout(resolve, 20));

let rd; // request-defer's root entry, loaded only by the variants that use it
const errorsByPhase = {};
async function loadLibrary() {
  rd = await importPackage();
  // The latency and overload suites count reported errors (overflow refusals)
  // instead of writing each one to stderr, as an app's logger would.
  if (config.defer) {
    rd.configureDefer({
      ...config.defer,
      onError: (_error, info) => {
        errorsByPhase[info.phase] = (errorsByPhase[info.phase] ?? 0) + 1;
      },
    });
  }
  const adapter = await importPackage(framework);
  return adapter.deferMiddleware;
}

// ---------------------------------------------------------------------------
// Throughput variants: one no-op unit of deferred work per request.

async function expressApp(variant) {
  const { default: express } = await import('express');
  const app = express(); // default settings, as a hello-world app has them
  if (variant !== undefined) {
    switch (variant) {
      case 'bare':
        app.get('/', (req, res) => res.send(HELLO));
        break;
      case 'floor':
      case 'floor-lib':
      case 'floor-aa': { // floor-aa: the same code in a second process (A/A control)
        // The floor of this design: one AsyncLocalStorage.run, one 'close' listener, an array.
        // floor-lib: the same with request-defer loaded but unused (what loading the package costs).
        if (variant === 'floor-lib') await loadLibrary();
        const als = new AsyncLocalStorage();
        app.use((req, res, next) => {
          const fns = [];
          res.once('close', () => {
            for (const fn of fns) fn();
          });
          als.run(fns, next);
        });
        app.get('/', (req, res) => {
          als.getStore().push(noop);
          res.send(HELLO);
        });
        break;
      }
      case 'floor-restore': {
        // The floor plus what SPEC semantic 11 asks of any implementation: each callback
        // runs in the async context of its defer() call (captured, then restored).
        const als = new AsyncLocalStorage();
        app.use((req, res, next) => {
          const fns = [];
          res.once('close', () => {
            for (const r of fns) r.runInAsyncScope(noop);
          });
          als.run(fns, next);
        });
        app.get('/', (req, res) => {
          als.getStore().push(new AsyncResource('floor'));
          res.send(HELLO);
        });
        break;
      }
      case 'hand': {
        // What users write today: on-finished and an array of closures, no ALS.
        const { default: onFinished } = await import('on-finished');
        app.use((req, res, next) => {
          const fns = [];
          req.deferred = fns;
          onFinished(res, () => {
            for (const fn of fns) fn();
          });
          next();
        });
        app.get('/', (req, res) => {
          req.deferred.push(noop);
          res.send(HELLO);
        });
        break;
      }
      case 'rd':
      case 'rd-idle': {
        const deferMiddleware = await loadLibrary();
        const { defer } = rd;
        app.use(deferMiddleware());
        if (variant === 'rd') {
          app.get('/', (req, res) => {
            defer(noop);
            res.send(HELLO);
          });
        } else {
          app.get('/', (req, res) => res.send(HELLO));
        }
        break;
      }
      case 'poppinss': {
        const { DeferQueue } = await import('@poppinss/defer');
        const queue = new DeferQueue();
        app.get('/', (req, res) => {
          queue.push(noop);
          res.send(HELLO);
        });
        break;
      }
      default:
        throw new Error(`unknown variant ${variant}`);
    }
    return app;
  }
  // latency and overload: the library with /none, /deferred and /inline routes.
  const deferMiddleware = await loadLibrary();
  const { defer } = rd;
  app.use(deferMiddleware());
  app.get('/none', (req, res) => res.send(HELLO));
  app.get('/deferred', (req, res) => {
    defer(sleep20);
    res.send(HELLO);
  });
  app.get('/inline', async (req, res) => {
    await sleep20();
    res.send(HELLO);
  });
  return app;
}

async function koaApp(variant) {
  const { default: Koa } = await import('koa');
  const app = new Koa();
  if (variant !== undefined) {
    switch (variant) {
      case 'bare':
        app.use((ctx) => {
          ctx.body = HELLO;
        });
        break;
      case 'floor':
      case 'floor-lib': // request-defer loaded, unused (see Express)
      case 'floor-aa': { // floor-aa: the same code in a second process (A/A control)
        if (variant === 'floor-lib') await loadLibrary();
        const als = new AsyncLocalStorage();
        app.use((ctx, next) => {
          const fns = [];
          ctx.res.once('close', () => {
            for (const fn of fns) fn();
          });
          return als.run(fns, next);
        });
        app.use((ctx) => {
          als.getStore().push(noop);
          ctx.body = HELLO;
        });
        break;
      }
      case 'floor-restore': { // the floor plus semantic 11's capture and restore (see Express)
        const als = new AsyncLocalStorage();
        app.use((ctx, next) => {
          const fns = [];
          ctx.res.once('close', () => {
            for (const r of fns) r.runInAsyncScope(noop);
          });
          return als.run(fns, next);
        });
        app.use((ctx) => {
          als.getStore().push(new AsyncResource('floor'));
          ctx.body = HELLO;
        });
        break;
      }
      case 'hand': {
        const { default: onFinished } = await import('on-finished');
        app.use((ctx, next) => {
          const fns = [];
          ctx.state.deferred = fns;
          onFinished(ctx.res, () => {
            for (const fn of fns) fn();
          });
          return next();
        });
        app.use((ctx) => {
          ctx.state.deferred.push(noop);
          ctx.body = HELLO;
        });
        break;
      }
      case 'rd':
      case 'rd-idle': {
        const deferMiddleware = await loadLibrary();
        const { defer } = rd;
        app.use(deferMiddleware());
        app.use(
          variant === 'rd'
            ? (ctx) => {
                defer(noop);
                ctx.body = HELLO;
              }
            : (ctx) => {
                ctx.body = HELLO;
              },
        );
        break;
      }
      case 'poppinss': {
        const { DeferQueue } = await import('@poppinss/defer');
        const queue = new DeferQueue();
        app.use((ctx) => {
          queue.push(noop);
          ctx.body = HELLO;
        });
        break;
      }
      default:
        throw new Error(`unknown variant ${variant}`);
    }
    return app.callback();
  }
  const deferMiddleware = await loadLibrary();
  const { defer } = rd;
  app.use(deferMiddleware());
  app.use(async (ctx) => {
    if (ctx.path === '/deferred') defer(sleep20);
    else if (ctx.path === '/inline') await sleep20();
    ctx.body = HELLO;
  });
  return app.callback();
}

// ---------------------------------------------------------------------------
// Control routes, answered before the app.

function heapNow() {
  if (typeof globalThis.gc === 'function') {
    globalThis.gc();
    globalThis.gc();
  }
  return process.memoryUsage().heapUsed;
}

const sampler = { timer: undefined, peakHeap: 0, peakQueued: 0, samples: 0 };
function sample() {
  const heap = process.memoryUsage().heapUsed;
  if (heap > sampler.peakHeap) sampler.peakHeap = heap;
  if (rd !== undefined) {
    const { queued } = rd.deferStats();
    if (queued > sampler.peakQueued) sampler.peakQueued = queued;
  }
  sampler.samples++;
}

async function control(req, res) {
  let body;
  switch (req.url) {
    case '/__cpu': {
      const { user, system } = process.cpuUsage();
      body = { us: user + system, user, system };
      break;
    }
    case '/__heap':
      body = { heapUsed: heapNow() };
      break;
    case '/__sample':
      sampler.peakHeap = 0;
      sampler.peakQueued = 0;
      sampler.samples = 0;
      clearInterval(sampler.timer);
      sampler.timer = setInterval(sample, 20);
      body = { ok: true };
      break;
    case '/__stats':
      clearInterval(sampler.timer);
      sampler.timer = undefined;
      body = {
        stats: rd?.deferStats(),
        errorsByPhase,
        peakHeap: sampler.peakHeap,
        peakQueued: sampler.peakQueued,
        samples: sampler.samples,
      };
      break;
    case '/__drain': {
      const t0 = performance.now();
      const summary = rd === undefined ? undefined : await rd.drain();
      const drainMs = performance.now() - t0;
      body = { summary, drainMs, heapUsed: heapNow(), stats: rd?.deferStats() };
      break;
    }
    default:
      res.statusCode = 404;
      body = { error: 'unknown control route' };
  }
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(body));
}

const makeApp = framework === 'express' ? expressApp : koaApp;
const handler = await makeApp(suite === 'throughput' ? variant : undefined);
const server = createServer((req, res) => {
  if (req.url.startsWith('/__')) {
    control(req, res).catch((error) => {
      res.statusCode = 500;
      res.end(String(error?.stack ?? error));
    });
    return;
  }
  handler(req, res);
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
process.on('SIGTERM', () => {
  server.closeAllConnections?.();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
});
