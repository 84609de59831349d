import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { currentCollection, defer, drain } from '../../src/index.js';
import { deferMiddleware } from '../../src/express.js';

export async function main() {
  const log: string[] = [];
  const app = express();
  app.use(deferMiddleware({ timeout: 10_000, onError: (error) => void log.push(`error: ${String(error)}`) }));
  app.use((req, _res, next) => {
    defer(() => void log.push(`access log ${req.path}`), { always: true });
    next();
  });

  const api = express.Router();
  api.use(deferMiddleware({ mode: 'parallel' })); // same response: reuses the app's scope, options ignored
  api.get('/users', (_req, res) => {
    defer(() => void log.push('refresh users cache'));
    res.json({ sameScope: currentCollection()?.size === 2 }); // the access log and the cache refresh
  });
  app.use('/api', api);

  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const response = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/api/users`);
  const body: unknown = await response.json();
  await drain();
  server.close();
  return { body, log };
}
