import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { defer, drain } from '../../src/index.js';
import { deferMiddleware } from '../../src/koa.js';

const visits: string[] = [];

export function createApp(): Koa {
  const app = new Koa();
  app.use(deferMiddleware()); // first, so every later middleware is in the scope
  app.use(async (ctx) => {
    const path = ctx.path; // capture what the callback needs, not ctx itself
    // The status is read when the response closes, after Koa's respond() set it.
    defer(({ outcome }) => void visits.push(`visit ${path} -> ${outcome.statusCode}`)).always();
    if (path !== '/hello') ctx.throw(404, 'no such page');
    defer(() => void visits.push(`greeted on ${path}`));
    ctx.body = 'hello';
  });
  return app;
}

export async function main() {
  const server = createApp().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const statuses: number[] = [];
  for (const path of ['/hello', '/nope']) {
    const response = await fetch(base + path);
    await response.text();
    statuses.push(response.status);
    await drain();
  }
  server.close();
  return { statuses, visits };
}
