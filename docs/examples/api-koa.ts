import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { defer, DeferError, drain } from '../../src/index.js';
import { deferMiddleware } from '../../src/koa.js';

export async function main() {
  let refused = '';
  try {
    deferMiddleware({ await: true } as never); // `await` is for withDefer() only
  } catch (error) {
    if (error instanceof DeferError) refused = error.code;
  }

  const statuses: (number | undefined)[] = [];
  const app = new Koa();
  app.use(deferMiddleware());
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch {
      ctx.status = 503; // an error handler further in decides the status
      ctx.body = 'try again later';
    }
  });
  app.use(async () => {
    defer(({ outcome }) => void statuses.push(outcome.statusCode)).always();
    throw new Error('database unavailable');
  });

  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const response = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  await response.text();
  await drain();
  server.close();
  return { refused, sent: response.status, seenByCallback: statuses };
}
