import { configureDefer, defer, DeferError, drain, waitUntil, withDefer, type DeferErrorInfo } from '../../src/index.js';
import { deferDispatch } from '../../src/bullmq.js';
import { fakeDefer } from '../../src/testing.js';

export async function main() {
  const seen: Record<string, string> = {}; // code -> how it surfaced
  const thrown = (attempt: () => unknown) => {
    try {
      attempt();
    } catch (error) {
      if (error instanceof DeferError) seen[error.code] = 'thrown';
    }
  };
  const onError = (error: unknown, info: DeferErrorInfo) => {
    if (error instanceof DeferError) seen[error.code] = `reported, phase ${info.phase}`;
  };

  thrown(() => defer(() => undefined)); // ERR_DEFER_NO_SCOPE
  thrown(() => waitUntil('not a promise' as never)); // ERR_DEFER_INVALID_CALLBACK
  thrown(() => configureDefer({ concurrency: 0 })); // ERR_DEFER_INVALID_OPTIONS
  const fake = fakeDefer();
  thrown(() => fakeDefer()); // ERR_DEFER_FAKE_ACTIVE
  fake.restore();
  thrown(() => fake.assertCount(0)); // ERR_DEFER_FAKE_RESTORED

  // ERR_DEFER_TIMEOUT: a callback past its deadline.
  await withDefer(() => void defer(() => new Promise(() => {}), { timeout: 1_000 }), { await: true, onError });
  // ERR_DEFER_OVERFLOW: a third generation of nested defer() with maxNestingDepth 1.
  configureDefer({ maxNestingDepth: 1 });
  try {
    await withDefer(() => void defer(() => void defer(() => void defer(() => undefined))), { await: true, onError });
  } finally {
    configureDefer({ maxNestingDepth: undefined });
  }
  // ERR_DEFER_ENQUEUE: a queue whose add() fails.
  const down = { add: () => Promise.reject(new Error('connect ECONNREFUSED')) };
  await withDefer(() => void deferDispatch(down, 'welcome-mail', {}), { await: true, onError });
  // ERR_DEFER_ABANDONED: still running at a drain() deadline.
  await withDefer(() => void defer(() => new Promise(() => {})), { onError });
  await drain({ timeout: 1_000 });
  return seen;
}
