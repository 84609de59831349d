import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { deferStats } from '../../src/index.js';
import { deferMiddleware } from '../../src/express.js';

export function createApp(): express.Express {
  const app = express();
  app.use(deferMiddleware());
  app.get('/health', (_req, res) => {
    const defer = deferStats(); // { queued, running } now; { completed, failed, dropped, abandoned } since start
    const overloaded = defer.queued > 5_000; // half of the default maxQueued
    res.status(overloaded ? 503 : 200).json({ status: overloaded ? 'overloaded' : 'ok', defer });
  });
  return app;
}

export async function main() {
  const server = createApp().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const response = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/health`);
  const body: unknown = await response.json();
  server.close();
  return { status: response.status, body };
}
