// --queue: the welcome mail goes through BullMQ (Redis) instead of running
// in-process. deferDispatch() adds the job only after a successful response;
// a Worker in this same process sends the mail.
import { deliver } from '../services/notifications.mjs';
import { publishForRequest } from './timeline.mjs';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

function connectionOptions(redisUrl) {
  const url = new URL(redisUrl);
  return {
    host: url.hostname,
    port: Number(url.port || 6379),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.pathname.length > 1 ? { db: Number(url.pathname.slice(1)) } : {}),
  };
}

/** Resolves to true when Redis answers PING within a second. */
export async function redisAnswers(redisUrl) {
  const { Redis } = await import('ioredis');
  const client = new Redis({
    ...connectionOptions(redisUrl),
    lazyConnect: true,
    connectTimeout: 1_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

export const HOW_TO_START_REDIS = `Redis did not answer. --queue needs a Redis server; start one with, for example:

  apt-get install -y redis-server
  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes

or: docker run --rm -p 6379:6379 redis:7
then run \`npm run playground -- --queue\` again (set REDIS_URL for another address).`;

/** Creates the mail queue and its Worker; returns them with a close(). */
export async function startMailQueue(redisUrl) {
  const { Queue, Worker } = await import('bullmq');
  const connection = { ...connectionOptions(redisUrl), maxRetriesPerRequest: null };
  const name = 'request-defer-playground-mail';
  const queue = new Queue(name, { connection, defaultJobOptions: { removeOnComplete: 100, removeOnFail: 100 } });
  const worker = new Worker(
    name,
    async (job) => {
      publishForRequest(job.data.requestId, { type: 'job', name: job.name, state: 'active', jobId: job.id });
      await deliver(job.data);
    },
    { connection, concurrency: 4 },
  );
  worker.on('completed', (job) => publishForRequest(job.data.requestId, { type: 'job', name: job.name, state: 'completed', jobId: job.id }));
  worker.on('failed', (job, error) =>
    publishForRequest(job?.data.requestId, { type: 'job', name: job?.name, state: 'failed', jobId: job?.id, error: error.message }),
  );
  await worker.waitUntilReady();
  return {
    queue,
    async close() {
      await worker.close();
      await queue.close();
    },
  };
}
