// The playground's observer: turns request-defer's diagnostics_channel events
// into a per-request timeline and streams it to the page over Server-Sent
// Events. Nothing here is part of request-defer; it only *listens*.
//
// Correlating events with requests
// --------------------------------
// Every request gets an id in our own AsyncLocalStorage (`requestContext`),
// entered by `trackRequest()` *before* deferMiddleware(). Deferred callbacks
// run in the async context of their defer() call, so the id is visible in
// the callback trace's `start` event; the later events of the same trace
// (`asyncEnd`, `error`, `end`) carry the same message object, which we key
// in a WeakMap. The scope and skip events are published when the response
// closes, where no request context is guaranteed (a client abort closes the
// socket from outside the request). They carry the scope's `outcome`; we tie
// that outcome to the request in the scope event, using the request whose
// 'close' listener ran just before request-defer's (ours is registered first,
// and request-defer publishes the scope event synchronously in its listener).

import { AsyncLocalStorage } from 'node:async_hooks';
import dc from 'node:diagnostics_channel';
import { performance } from 'node:perf_hooks';

/** The request id (and timeline record) of the current request. */
export const requestContext = new AsyncLocalStorage();

/** @returns {string | undefined} the current request's id, where there is one. */
export function currentRequestId() {
  return requestContext.getStore()?.id;
}

const MAX_REQUESTS = 40;

/** Shown on the page: which framework and mail transport this server runs. */
export const serverInfo = { framework: 'express', queue: false };

/** Timeline records of the most recent requests, oldest first. */
const records = [];
const clients = new Set();
let nextId = 0;
/** The request whose 'close' listener ran last (see the note above). */
let closing;
const byOutcome = new WeakMap();
const byTrace = new WeakMap();

function now() {
  return performance.now();
}

function emit(rec, event) {
  const full = { id: rec.id, t: Math.round((now() - rec.t0) * 10) / 10, ...event };
  rec.events.push(full);
  const data = `data: ${JSON.stringify(full)}\n\n`;
  for (const res of clients) res.write(data);
}

function baseName(name) {
  return String(name).replace(/#\d+$/, '');
}

function describeError(error) {
  if (error === undefined) return undefined;
  if (error instanceof Error) return `${error.code ? `${error.code}: ` : ''}${error.message}`;
  return String(error);
}

/**
 * Starts a timeline record for a request and runs `next` in its request
 * context. Must run before deferMiddleware(), so our 'close' listener
 * comes before request-defer's.
 */
export function trackRequest(req, res, { path, label }, next) {
  const rec = { id: `r${++nextId}`, t0: now(), events: [], traces: new Map() };
  records.push(rec);
  if (records.length > MAX_REQUESTS) records.shift();
  emit(rec, {
    type: 'request',
    method: req.method,
    path,
    label: label || undefined,
    at: Date.now(),
  });
  res.setHeader('x-request-id', rec.id);
  res.on('finish', () => emit(rec, { type: 'finish', statusCode: res.statusCode }));
  res.on('close', () => {
    closing = rec;
    emit(rec, { type: 'close', aborted: !res.writableFinished, statusCode: res.headersSent ? res.statusCode : undefined });
  });
  return requestContext.run(rec, next);
}

/** Publishes an event that is not a library event (queue jobs) on a request's timeline. */
export function publishForRequest(id, event) {
  const rec = records.find((r) => r.id === id);
  if (rec !== undefined) emit(rec, event);
}

function recordFor(outcome) {
  return (outcome !== undefined && byOutcome.get(outcome)) || requestContext.getStore();
}

// --- request-defer's channels ----------------------------------------------

function onScope(message) {
  const rec = closing ?? requestContext.getStore();
  closing = undefined;
  if (rec === undefined) return;
  byOutcome.set(message.outcome, rec);
  emit(rec, { type: 'scope', outcome: { ...message.outcome, error: undefined }, size: message.size });
}

function onSkip(message) {
  const rec = recordFor(message.outcome);
  if (rec === undefined) return;
  emit(rec, { type: 'skip', name: baseName(message.name), fullName: message.name, reason: message.reason });
}

function settleTrace(message, state) {
  const entry = byTrace.get(message);
  if (entry === undefined || entry.done) return;
  entry.done = true;
  emit(entry.rec, {
    type: 'callback-end',
    name: baseName(message.name),
    fullName: message.name,
    state,
    error: describeError(message.error),
  });
}

function stateOf(message) {
  if (!('error' in message)) return 'ran';
  const code = message.error?.code;
  if (code === 'ERR_DEFER_TIMEOUT') return 'timed-out';
  if (code === 'ERR_DEFER_ABANDONED') return 'abandoned';
  return 'failed';
}

const traceHandlers = {
  start(message) {
    const rec = recordFor(message.outcome);
    if (rec === undefined) return;
    byTrace.set(message, { rec, done: false });
    if (message.outcome !== undefined && !byOutcome.has(message.outcome)) byOutcome.set(message.outcome, rec);
    emit(rec, {
      type: 'callback-start',
      name: baseName(message.name),
      fullName: message.name,
      generation: message.generation,
    });
  },
  end(message) {
    // A synchronous throw ends the trace here (error, then end; no asyncEnd).
    if ('error' in message) settleTrace(message, stateOf(message));
  },
  asyncStart() {},
  asyncEnd(message) {
    settleTrace(message, stateOf(message));
  },
  error() {
    // The error is on the message; asyncEnd (or end) reports it.
  },
};

let subscribed = false;

/** Subscribes to request-defer's diagnostics channels (once per process). */
export function observeRequestDefer() {
  if (subscribed) return;
  subscribed = true;
  dc.tracingChannel('request-defer:callback').subscribe(traceHandlers);
  dc.subscribe('request-defer:scope', onScope);
  dc.subscribe('request-defer:skip', onSkip);
}

// --- Server-Sent Events ------------------------------------------------------

/**
 * GET /events: replays the recent timeline, then streams new events. This
 * long response is served before deferMiddleware(), outside any defer scope.
 */
export function handleEvents(req, res) {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
  });
  res.write('retry: 1000\n\n');
  for (const rec of records) for (const event of rec.events) res.write(`data: ${JSON.stringify(event)}\n\n`);
  res.write(`event: ready\ndata: ${JSON.stringify(serverInfo)}\n\n`);
  clients.add(res);
  const heartbeat = setInterval(() => res.write(': ping\n\n'), 15_000);
  res.on('close', () => {
    clearInterval(heartbeat);
    clients.delete(res);
  });
}

/** Ends every open event stream (shutdown). */
export function closeEventStreams() {
  for (const res of clients) res.end();
  clients.clear();
}
