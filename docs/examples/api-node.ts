import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { defer, drain } from '../../src/index.js';
import { withDeferHandler } from '../../src/node.js';

export async function main() {
  const log: string[] = [];
  // The wrapper returns what the handler returns (here a promise) and catches nothing.
  const handle = withDeferHandler(
    async (req, res) => {
      defer(() => {
        throw new Error(`webhook for ${req.url} failed`);
      });
      res.end('ok');
      return 'handled';
    },
    { onError: (error, info) => void log.push(`${info.phase}: ${(error as Error).message}`) },
  );
  const server = createServer((req, res) => {
    void handle(req, res).then((value) => log.push(`handler returned ${value}`));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  await (await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/orders`)).text();
  await drain();
  server.close();
  return log;
}
