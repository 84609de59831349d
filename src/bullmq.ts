import { defer } from './api.js';
import type { DeferredCallback } from './core/engine.js';
import { S } from './core/state.js';
import { codes, DeferError, describe, invalidCallbackError } from './errors.js';
import { parseDeferOptions } from './options.js';
import type { DeferOptions } from './types.js';

/** The part of a BullMQ `Queue` that `deferDispatch()` uses. */
export interface QueueLike<Data = unknown, JobOptions = unknown> {
  readonly name?: string;
  add(name: string, data: Data, opts?: JobOptions): Promise<unknown>;
}

/** The enqueue deadline when neither the call nor the scope sets a timeout. */
export const DEFAULT_DISPATCH_TIMEOUT = 10_000;

/**
 * Defers `queue.add(name, data, opts)` until the response has been sent
 * with a passing outcome (the same status rules as `defer()`), so a failed
 * request never enqueues work. Returns the `DeferredCallback`: chain
 * `.always()` to enqueue whatever the outcome. The generated callback name
 * carries the job name (`welcome-mail#17`) so reports name the job.
 *
 * The add is bounded by the callback's signal and timeout: `deferOptions.timeout`,
 * else the scope's `timeout`, else 10 s (BullMQ waits for a reconnect forever
 * by default). A failed add is reported as `ERR_DEFER_ENQUEUE` with the
 * original error as `cause`.
 *
 * @example
 * ```ts
 * import { Queue } from 'bullmq';
 * import { deferDispatch } from 'request-defer/bullmq';
 *
 * const mails = new Queue('mails', { connection: { host: '127.0.0.1', port: 6379 } });
 *
 * app.post('/signup', async (req, res) => {
 *   const user = await createUser(req.body);
 *   deferDispatch(mails, 'welcome-mail', { userId: user.id });
 *   res.status(201).json(user);
 * });
 * ```
 */
export function deferDispatch<Data, JobOptions>(
  queue: QueueLike<Data, JobOptions>,
  name: string,
  data: Data,
  opts?: JobOptions,
  deferOptions?: Omit<DeferOptions, 'name'> & { name?: string | undefined },
): DeferredCallback {
  if (queue === null || typeof queue !== 'object' || typeof (queue as QueueLike).add !== 'function') {
    throw invalidCallbackError('deferDispatch() (request-defer/bullmq)', 'a BullMQ Queue (an object with add())', queue);
  }
  if (typeof name !== 'string' || name.length === 0) {
    throw new DeferError(
      codes.ERR_DEFER_INVALID_OPTIONS,
      `deferDispatch() (request-defer/bullmq) expects the job name as a non-empty string, but received ${typeof name}. ` +
        `Pass the name your Worker handles, e.g. deferDispatch(queue, 'welcome-mail', data).`,
    );
  }
  const parsed = deferOptions === undefined ? {} : parseDeferOptions(deferOptions, 'deferDispatch() (request-defer/bullmq)');
  const timeout = parsed.timeout ?? S.als.getStore()?.scope.opts.timeout ?? DEFAULT_DISPATCH_TIMEOUT;
  const dispatch = async (): Promise<void> => {
    try {
      await queue.add(name, data, opts);
    } catch (error) {
      throw new DeferError(
        codes.ERR_DEFER_ENQUEUE,
        `deferDispatch() could not add job "${name}"${queue.name === undefined ? '' : ` to queue "${queue.name}"`}: ` +
          `${reasonText(error)}. Check that Redis is reachable; the job was not enqueued.`,
        { cause: error },
      );
    }
  };
  Object.defineProperty(dispatch, 'name', { value: name });
  return defer(dispatch, { ...parsed, timeout });
}

/** What an add() rejected with, as text; never throws (a null-prototype object, a throwing toString or message getter). */
function reasonText(error: unknown): string {
  try {
    return error instanceof Error ? String(error.message) : String(error);
  } catch {
    return describe(error);
  }
}
