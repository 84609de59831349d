#!/usr/bin/env node
// npm run playground [-- --koa] [-- --port 3000] [-- --queue]
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = fileURLToPath(new URL('..', import.meta.url));

let args;
try {
  args = parseArgs({
    options: {
      koa: { type: 'boolean', default: false },
      express: { type: 'boolean', default: false },
      port: { type: 'string', default: process.env.PORT ?? '3000' },
      host: { type: 'string', default: '127.0.0.1' },
      queue: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }).values;
} catch (error) {
  console.error(`${error.message}\nRun \`npm run playground -- --help\` for the options.`);
  process.exit(2);
}

if (args.help) {
  console.log(`request-defer playground

  npm run playground                   Express 5 on http://127.0.0.1:3000
  npm run playground -- --koa          Koa 3 instead
  npm run playground -- --port 8080    another port (0: any free port)
  npm run playground -- --queue        welcome mail through BullMQ (Redis at $REDIS_URL or 127.0.0.1:6379)`);
  process.exit(0);
}

const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  console.error(`--port expects a port number from 0 to 65535, got "${args.port}".`);
  process.exit(2);
}

// The playground imports the built package (dist/), as an app would.
if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
  console.log('dist/ is missing: running `npm run build` first…');
  const build = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) process.exit(build.status ?? 1);
}

const { startPlayground } = await import('./server.mjs');

let playground;
try {
  playground = await startPlayground({ framework: args.koa ? 'koa' : 'express', port, host: args.host, queue: args.queue });
} catch (error) {
  if (error.code === 'PLAYGROUND_NO_REDIS') console.error(error.message);
  else if (error.code === 'EADDRINUSE') console.error(`Port ${port} is in use: pass another one with \`npm run playground -- --port 3001\`.`);
  else console.error(error);
  process.exit(1);
}

const name = playground.framework === 'koa' ? 'Koa 3' : 'Express 5';
console.log(`request-defer playground (${name}${playground.queue ? ', mail via BullMQ' : ''}) running at ${playground.url}`);
console.log('Open it in a browser and click the buttons; Ctrl+C stops it.');

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    if (stopping) process.exit(1);
    stopping = true;
    const summary = await playground.close();
    console.log(`stopped; drain(): ${JSON.stringify(summary)}`);
    process.exit(0);
  });
}
