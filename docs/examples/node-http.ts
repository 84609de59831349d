import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { defer, drain } from '../../src/index.js';
import { withDeferHandler } from '../../src/node.js';

const log: string[] = [];

export const server = createServer(
  withDeferHandler((req, res) => {
    const url = req.url ?? '/';
    defer(() => void log.push(`after ${url}`)); // only when the status is < 400
    res.writeHead(url === '/' ? 200 : 404, { 'content-type': 'text/plain' });
    res.end(url === '/' ? 'home' : 'not found');
  }),
);

export async function main() {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const statuses: number[] = [];
  for (const path of ['/', '/missing']) {
    const response = await fetch(base + path);
    await response.text();
    statuses.push(response.status);
    await drain();
  }
  server.close();
  return { statuses, log };
}
