import { withDefer } from '../../src/index.js';
import { deferDispatch, type QueueLike } from '../../src/bullmq.js';

// In production: `new Queue('mails', { connection })` from bullmq. Here a stand-in with the same add().
const jobs: string[] = [];
const mails: QueueLike<{ userId: number }> = {
  name: 'mails',
  add: async (name, data) => void jobs.push(`${name} for user ${data.userId}`),
};

export async function main() {
  // Enqueued only after the scope (or response) passed; .always() enqueues whatever the outcome.
  await withDefer(
    () => {
      deferDispatch(mails, 'welcome-mail', { userId: 1 });
      deferDispatch(mails, 'audit', { userId: 1 }, { attempts: 3 }, { timeout: 2_000 }).always();
    },
    { await: true },
  );
  await withDefer(() => {
    deferDispatch(mails, 'welcome-mail', { userId: 2 }); // never enqueued: the signup failed
    deferDispatch(mails, 'audit', { userId: 2 }).always();
    throw new Error('signup failed');
  }).catch(() => undefined);

  // Redis down: reported as ERR_DEFER_ENQUEUE, the original error as its cause.
  const reported: string[] = [];
  const down: QueueLike = {
    name: 'mails',
    add: () => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:6379')),
  };
  await withDefer(() => void deferDispatch(down, 'welcome-mail', { userId: 3 }), {
    await: true,
    onError: (error, info) => {
      const { code, cause } = error as { code: string; cause: Error };
      reported.push(`${code} (${info.name}): ${cause.message}`);
    },
  });
  return { jobs, reported };
}
