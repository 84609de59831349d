import dc from 'node:diagnostics_channel';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { defer, drain } from '../../src/index.js';
import { withDeferHandler } from '../../src/node.js';

export async function main() {
  const ran: string[] = [];
  const skipped: string[] = [];
  const onSkip = (message: unknown) => {
    const { name, reason } = message as { name: string; reason: string };
    skipped.push(`${name} (${reason})`);
  };
  dc.subscribe('request-defer:skip', onSkip);

  // GET /404 answers 404, and so on; every request defers one plain and one always callback.
  const server = createServer(
    withDeferHandler((req, res) => {
      const status = Number(req.url!.slice(1));
      defer(() => void ran.push(`${status}: plain`), { name: `plain-${status}` });
      defer(() => void ran.push(`${status}: always`), { always: true });
      res.writeHead(status).end();
    }),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  for (const status of [200, 204, 302, 404, 422, 500]) {
    await (await fetch(`${base}/${status}`, { redirect: 'manual' })).text();
    await drain();
  }
  server.close();
  dc.unsubscribe('request-defer:skip', onSkip);
  return { ran, skipped };
}
