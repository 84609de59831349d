import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { defer, drain, type Outcome } from '../../src/index.js';
import { withDeferHandler } from '../../src/node.js';

export async function main() {
  const recorded: string[] = [];
  const judged: Outcome[] = [];
  // Record search misses too: a 404 counts as a pass here, a 500 still does not.
  const runWhen = (outcome: Outcome) => {
    judged.push(outcome); // called at most once per request, and only if a plain callback needs it
    return outcome.ok || outcome.statusCode === 404;
  };
  const server = createServer(
    withDeferHandler(
      (req, res) => {
        const query = new URL(req.url!, 'http://localhost').searchParams.get('q') ?? '';
        defer(() => void recorded.push(`search "${query}"`));
        defer(() => void recorded.push(`search "${query}" counted`), { name: 'count' });
        res.writeHead(query === 'crash' ? 500 : query === 'ada' ? 200 : 404).end();
      },
      { runWhen },
    ),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  for (const q of ['ada', 'nobody', 'crash']) {
    await (await fetch(`${base}/search?q=${q}`)).text();
    await drain();
  }
  server.close();
  return { recorded, judged: judged.map((o) => o.statusCode) };
}
