import dc from 'node:diagnostics_channel';
import { defer, withDefer, type Outcome } from '../../src/index.js';

/** The logger methods used here: a pino logger (or a child of one) has them. */
export interface LoggerLike {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

interface CallbackMessage {
  name: string;
  outcome: Outcome;
  generation: number;
  startedAt: number; // performance.now() when the callback started
  result?: unknown; // what the callback returned (set at end)
  error?: unknown; // what it threw or rejected with, or the timeout/abandonment DeferError
}

// A callback that returned no promise is over at `end`; an async one at `asyncEnd`.
const isThenable = (value: unknown) => typeof (value as { then?: unknown } | null)?.then === 'function';

/** Logs each deferred callback when it settles, and each one the rules skip. Returns `stop()`. */
export function logDeferredWork(logger: LoggerLike): () => void {
  const callbacks = dc.tracingChannel('request-defer:callback');
  const settled = (m: CallbackMessage) => {
    const fields = {
      deferred: m.name,
      generation: m.generation,
      status: m.outcome.statusCode,
      durationMs: Math.round(performance.now() - m.startedAt),
    };
    if (m.error === undefined) logger.info(fields, 'deferred callback done');
    else logger.error({ ...fields, err: m.error }, 'deferred callback failed');
  };
  const handlers = {
    start() {},
    end(message: object) {
      const m = message as CallbackMessage;
      if (m.error !== undefined || !isThenable(m.result)) settled(m); // synchronous: over now
    },
    asyncStart() {},
    error() {},
    asyncEnd(message: object) {
      settled(message as CallbackMessage);
    },
  };
  const onSkip = (message: unknown) => {
    const { name, reason } = message as { name: string; reason: string };
    logger.warn({ deferred: name, reason }, 'deferred callback skipped');
  };
  callbacks.subscribe(handlers);
  dc.subscribe('request-defer:skip', onSkip);
  return () => {
    callbacks.unsubscribe(handlers);
    dc.unsubscribe('request-defer:skip', onSkip);
  };
}

// In an app: logDeferredWork(pino()). Here a stand-in that records what pino would receive.
export async function main() {
  const lines: { level: string; message: string; fields: Record<string, unknown> }[] = [];
  const record = (level: string) => (fields: object, message: string) =>
    void lines.push({ level, message, fields: fields as Record<string, unknown> });
  const stop = logDeferredWork({ info: record('info'), warn: record('warn'), error: record('error') });
  try {
    await withDefer(
      () => {
        defer(() => undefined, { name: 'welcome-mail' });
        defer(() => Promise.reject(new Error('webhook 502')), { name: 'webhook' });
      },
      { await: true, onError: () => undefined },
    );
    await withDefer(() => {
      defer(() => undefined, { name: 'receipt' }); // skipped: fn threw
      throw new Error('payment declined');
    }).catch(() => undefined);
  } finally {
    stop();
  }
  return lines;
}
