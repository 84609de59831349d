// Starts the playground: Express (default) or Koa, optionally with the
// welcome mail on a BullMQ queue. `start.mjs` is the command line around it.
import { configureDefer, drain } from 'request-defer';
import { createExpressApp } from './app/express.mjs';
import { createKoaApp } from './app/koa.mjs';
import { closeEventStreams, observeRequestDefer, serverInfo } from './lib/timeline.mjs';
import { useMailQueue } from './services/notifications.mjs';
import { DEFAULT_REDIS_URL, HOW_TO_START_REDIS, redisAnswers, startMailQueue } from './lib/queue.mjs';

/**
 * @param {{ framework?: 'express' | 'koa', port?: number, host?: string, queue?: boolean, redisUrl?: string }} options
 * @returns {Promise<{ url: string, framework: string, queue: boolean, close(): Promise<void> }>}
 */
export async function startPlayground(options = {}) {
  const { framework = 'express', port = 3000, host = '127.0.0.1', queue = false } = options;
  const redisUrl = options.redisUrl ?? process.env.REDIS_URL ?? DEFAULT_REDIS_URL;

  observeRequestDefer();
  configureDefer({
    // Failures of deferred callbacks never reach the client; they come here.
    onError(error, info) {
      const message = error instanceof Error ? error.message : String(error);
      console.warn(`request-defer: ${info.name ?? 'waitUntil'} ${info.phase === 'timeout' ? 'timed out' : 'failed'}: ${message}`);
    },
  });

  let mailQueue;
  if (queue) {
    if (!(await redisAnswers(redisUrl))) {
      throw Object.assign(new Error(`${redisUrl}: ${HOW_TO_START_REDIS}`), { code: 'PLAYGROUND_NO_REDIS' });
    }
    mailQueue = await startMailQueue(redisUrl);
    useMailQueue(mailQueue.queue);
  }

  Object.assign(serverInfo, { framework, queue });
  const app = framework === 'koa' ? createKoaApp() : createExpressApp();
  const server = await listen(framework === 'koa' ? app.callback() : app, port, host);
  const address = server.address();
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`;

  return {
    url,
    framework,
    queue,
    async close() {
      closeEventStreams();
      await new Promise((resolve) => server.close(() => resolve()));
      // Graceful shutdown: let deferred work finish (or report it abandoned).
      const summary = await drain({ timeout: 3_000 });
      await mailQueue?.close();
      return summary;
    },
  };
}

async function listen(handler, port, host) {
  const { createServer } = await import('node:http');
  const server = createServer(handler);
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
