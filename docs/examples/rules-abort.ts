import { once } from 'node:events';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { defer, drain, type Outcome } from '../../src/index.js';
import { withDeferHandler } from '../../src/node.js';

export async function main() {
  const ran: string[] = [];
  let seen: Outcome | undefined;
  // A Server-Sent Events stream that only the client ends.
  const server = createServer(
    withDeferHandler((_req, res) => {
      defer(() => void ran.push('mark notifications read')); // skipped: the client left
      defer(({ outcome }) => {
        seen = outcome;
        ran.push('release the subscription'); // always: runs on an abort too
      }).always();
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: hello\n\n'); // headers and a first event are out; the response never ends
    }),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;

  // The client reads the first event, then goes away.
  await new Promise<void>((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/events' }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', () => undefined);
    req.end();
  });
  await drain(); // resolves once the server saw 'close' and ran what the rules admit
  server.close();
  return { outcome: seen, ran };
}
