// Counts the promises created on a request's terminate path, run in a child
// process per Node version by bench/run.mjs:  node bench/promises.mjs
// Prints one line `RESULT <json>`.
//
// A real node:http server per adapter (request-defer/node, /express, /koa).
// A 'close' listener added before the library's turns an async_hooks
// PROMISE counter on, one added after it (inside the handler) turns it off,
// so the count covers exactly the library's close handling: deciding the
// outcome, running the scope's callbacks and settling them. Each request
// defers one synchronous callback (target: 0 promises) or, for contrast,
// one async no-op callback (its own promise is counted).
import { createHook } from 'node:async_hooks';
import { createServer, request } from 'node:http';
import express from 'express';
import Koa from 'koa';
import { importPackage } from './lib/pkg.mjs';

const { defer, drain } = await importPackage();
const { withDeferHandler } = await importPackage('node');
const { deferMiddleware: expressDefer } = await importPackage('express');
const { deferMiddleware: koaDefer } = await importPackage('koa');

const REQUESTS = 50;
let counting = false;
let promises = 0;
let callbacksRan = 0;
const hook = createHook({
  init(_id, type) {
    if (counting && type === 'PROMISE') promises++;
  },
});

const callbacks = {
  sync: () => {
    callbacksRan++;
  },
  async: async () => {
    callbacksRan++;
  },
};

// Which callback the next request defers.
let kind = 'sync';
const startCounting = () => {
  counting = true;
};
const stopCounting = () => {
  counting = false;
};

function handlerFor(adapter) {
  if (adapter === 'node') {
    return withDeferHandler((req, res) => {
      defer(callbacks[kind]);
      res.on('close', stopCounting);
      res.end('ok');
    });
  }
  if (adapter === 'express') {
    const app = express();
    app.use(expressDefer());
    app.get('/', (req, res) => {
      defer(callbacks[kind]);
      res.on('close', stopCounting);
      res.send('ok');
    });
    return app;
  }
  const app = new Koa();
  app.use(koaDefer());
  app.use((ctx) => {
    defer(callbacks[kind]);
    ctx.res.on('close', stopCounting);
    ctx.body = 'ok';
  });
  return app.callback();
}

function get(port) {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
    req.end();
  });
}

const result = { node: process.version, requests: REQUESTS, adapters: {} };
hook.enable();
for (const adapter of ['node', 'express', 'koa']) {
  const handler = handlerFor(adapter);
  const server = createServer((req, res) => {
    res.on('close', startCounting); // registered before the library's own listener
    handler(req, res);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  result.adapters[adapter] = {};
  for (const k of ['sync', 'async']) {
    kind = k;
    for (let i = 0; i < 5; i++) await get(port); // warm up
    await drain();
    promises = 0;
    callbacksRan = 0;
    for (let i = 0; i < REQUESTS; i++) await get(port);
    await drain();
    result.adapters[adapter][k] = { promisesPerRequest: promises / REQUESTS, callbacksRan };
  }
  await new Promise((resolve) => server.close(resolve));
}
hook.disable();
process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
