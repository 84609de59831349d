import dc from 'node:diagnostics_channel';
import { defer, withDefer, type Outcome } from '../../src/index.js';

/** The OpenTelemetry API surface used here: `trace.getTracer('request-defer')` from @opentelemetry/api has it. */
export interface SpanLike {
  recordException(exception: Error | string): void;
  setStatus(status: { code: number; message?: string }): unknown;
  end(): void;
}
export interface TracerLike {
  startSpan(name: string, options?: { attributes?: Record<string, string | number> }): SpanLike;
}

const SPAN_STATUS_ERROR = 2; // SpanStatusCode.ERROR in @opentelemetry/api

interface CallbackMessage {
  name: string;
  outcome: Outcome;
  generation: number;
  result?: unknown; // what the callback returned (set at end)
  error?: unknown;
}

// A callback that returned no promise is over at `end`; an async one at `asyncEnd`.
const isThenable = (value: unknown) => typeof (value as { then?: unknown } | null)?.then === 'function';

/** One span per deferred callback run, ended when it settles. Returns `stop()`. */
export function traceDeferredWork(tracer: TracerLike): () => void {
  const callbacks = dc.tracingChannel('request-defer:callback');
  const spans = new WeakMap<object, SpanLike>();
  const finish = (m: CallbackMessage) => {
    const span = spans.get(m);
    if (span === undefined) return; // already ended
    spans.delete(m);
    if (m.error !== undefined) {
      span.recordException(m.error instanceof Error ? m.error : String(m.error));
      span.setStatus({ code: SPAN_STATUS_ERROR, message: String(m.error) });
    }
    span.end();
  };
  const handlers = {
    // Published inside the callback's async context (that of its defer() call),
    // so the request's active span becomes the parent.
    start(message: object) {
      const m = message as CallbackMessage;
      const attributes: Record<string, string | number> = {
        'defer.name': m.name,
        'defer.generation': m.generation,
        'defer.outcome': m.outcome.kind,
      };
      if (m.outcome.statusCode !== undefined) attributes['http.response.status_code'] = m.outcome.statusCode;
      spans.set(m, tracer.startSpan(`defer ${m.name}`, { attributes }));
    },
    end(message: object) {
      const m = message as CallbackMessage;
      if (m.error !== undefined || !isThenable(m.result)) finish(m); // synchronous: over now
    },
    asyncStart() {},
    error() {},
    asyncEnd(message: object) {
      finish(message as CallbackMessage); // settled: fulfilled, rejected, timed out or abandoned
    },
  };
  callbacks.subscribe(handlers);
  return () => callbacks.unsubscribe(handlers);
}

// In an app: traceDeferredWork(trace.getTracer('request-defer')). Here a stand-in tracer that records spans.
export async function main() {
  const spans: { name: string; attributes: object; exceptions: string[]; status?: number | undefined; ended: number }[] = [];
  const tracer: TracerLike = {
    startSpan(name, options) {
      const span = { name, attributes: options?.attributes ?? {}, exceptions: [] as string[], status: undefined as number | undefined, ended: 0 };
      spans.push(span);
      return {
        recordException: (exception) => void span.exceptions.push(String(exception)),
        setStatus: (status) => void (span.status = status.code),
        end: () => void span.ended++,
      };
    },
  };
  const stop = traceDeferredWork(tracer);
  try {
    await withDefer(
      () => {
        defer(() => undefined, { name: 'welcome-mail' });
        defer(
          () => {
            throw new Error('template missing');
          },
          { name: 'receipt' },
        );
        defer(() => void defer(async () => Promise.reject(new Error('502')), { name: 'webhook' }), { name: 'fan-out' });
      },
      { await: true, onError: () => undefined },
    );
  } finally {
    stop();
  }
  return spans;
}
