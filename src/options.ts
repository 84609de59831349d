// zod's mini build, bundled into dist/ (see tsup.config.ts and docs/decisions.md):
// the classic build keeps ~3 MB alive in every process that loads it, which
// each major GC marks again; this keeps ~0.7 MB and no runtime dependency.
import * as z from 'zod/mini';
import { en } from 'zod/locales';
import { codes, DeferError } from './errors.js';
import type { DeferErrorHandler, DeferOptions, Outcome } from './types.js';

const MAX_TIMER = 2_147_483_647;

/** English messages for each parse, without touching zod's global config (which a user's zod may share in tests). */
const PARSE_CONTEXT = { error: en().localeError };

const fn = <T>(what: string) =>
  z.custom<T>((value) => typeof value === 'function', { message: `expected ${what}` });

const MS = 'expected a whole number of milliseconds';
const timeout = z.number({ error: MS }).check(
  z.int({ error: MS }),
  z.positive({ error: 'expected a positive number of milliseconds' }),
  z.maximum(MAX_TIMER, { error: `expected at most ${MAX_TIMER} ms (Node fires larger timers after 1 ms)` }),
);

const handler = fn<DeferErrorHandler>('a function (error, info) => void');

const deferSchema = z.strictObject({
  always: z.optional(z.boolean()),
  name: z.optional(z.string().check(z.minLength(1, { error: 'expected a non-empty string' }))),
  timeout: z.optional(timeout),
});

const scopeShape = {
  runWhen: z.optional(fn<(outcome: Outcome) => boolean>('a function (outcome) => boolean')),
  mode: z.optional(z.enum(['sequential', 'parallel'])),
  onError: z.optional(handler),
  timeout: z.optional(timeout),
};

const middlewareSchema = z.strictObject(scopeShape);
const withDeferSchema = z.strictObject({ ...scopeShape, await: z.optional(z.boolean()) });

const count = (min: number) => z.optional(z.number().check(z.int(), z.gte(min)));
const configSchema = z.strictObject({
  concurrency: count(1),
  maxQueued: count(0),
  maxNestingDepth: count(1),
  onError: z.optional(handler),
});

const drainSchema = z.strictObject({ timeout: z.optional(timeout) });

function parse<T>(schema: z.ZodMiniType<T>, value: unknown, api: string, fix: string): T {
  const result = schema.safeParse(value, PARSE_CONTEXT);
  if (result.success) return result.data;
  throw new DeferError(
    codes.ERR_DEFER_INVALID_OPTIONS,
    `${api} received invalid options:\n${z.prettifyError(result.error)}\n${fix}`,
  );
}

/** Options of a scope once validated. @internal */
export interface ScopeOptions {
  readonly runWhen: ((outcome: Outcome) => boolean) | undefined;
  readonly parallel: boolean;
  readonly onError: DeferErrorHandler | undefined;
  readonly timeout: number | undefined;
  readonly await: boolean;
}

/** @internal */
export const DEFAULT_SCOPE_OPTIONS: ScopeOptions = Object.freeze({
  runWhen: undefined,
  parallel: false,
  onError: undefined,
  timeout: undefined,
  await: false,
});

/** @internal */
export function parseScopeOptions(value: unknown, api: string, allowAwait: boolean): ScopeOptions {
  if (value === undefined) return DEFAULT_SCOPE_OPTIONS;
  if (api.startsWith('deferMiddleware()') && isRequestLike(value)) {
    throw new DeferError(
      codes.ERR_DEFER_INVALID_OPTIONS,
      `${api} received a request as its options: the factory itself was mounted, as app.use(deferMiddleware). ` +
        `Call it to get the middleware: app.use(deferMiddleware()).`,
    );
  }
  const o = parse(
    allowAwait ? withDeferSchema : middlewareSchema,
    value,
    api,
    allowAwait
      ? 'Fix the named field; allowed keys are runWhen, mode, onError, timeout and await.'
      : 'Fix the named field; allowed keys are runWhen, mode, onError and timeout (await is for withDefer() only).',
  ) as { runWhen?: ScopeOptions['runWhen']; mode?: string; onError?: DeferErrorHandler; timeout?: number; await?: boolean };
  return Object.freeze({
    runWhen: o.runWhen,
    parallel: o.mode === 'parallel',
    onError: o.onError,
    timeout: o.timeout,
    await: o.await === true,
  });
}

/** An IncomingMessage or a Koa context (both have a method and headers): what a factory mounted uncalled receives. */
function isRequestLike(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as { method?: unknown; headers?: unknown };
  return typeof v.method === 'string' && typeof v.headers === 'object' && v.headers !== null;
}

/**
 * defer()'s options sit on a hot path (one call per deferred callback), so
 * the common, valid shapes are recognised by hand; anything else goes
 * through the zod schema, which stays the single definition of validity and
 * of the error message. The fast path accepts only what the schema accepts.
 */
function isPlainValidDeferOptions(value: unknown): value is DeferOptions {
  if (typeof value !== 'object' || value === null || Object.getPrototypeOf(value) !== Object.prototype) return false;
  for (const key in value) {
    const v = (value as Record<string, unknown>)[key];
    if (v === undefined) {
      if (key !== 'name' && key !== 'always' && key !== 'timeout') return false;
    } else if (key === 'name') {
      if (typeof v !== 'string' || v.length === 0) return false;
    } else if (key === 'always') {
      if (typeof v !== 'boolean') return false;
    } else if (key === 'timeout') {
      if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > MAX_TIMER) return false;
    } else {
      return false;
    }
  }
  return true;
}

/** @internal */
export function parseDeferOptions(value: unknown, api: string): DeferOptions {
  if (isPlainValidDeferOptions(value)) return { ...value };
  return parse(
    deferSchema,
    value,
    api,
    'Fix the named field; allowed keys are always (boolean), name (non-empty string) and timeout (ms).',
  );
}

/** @internal */
export function parseConfig(value: unknown): z.infer<typeof configSchema> {
  if (typeof value !== 'object' || value === null) {
    return parse(configSchema, value, 'configureDefer()', 'Pass an object such as { concurrency: 32 }.');
  }
  return parse(
    configSchema,
    value,
    'configureDefer()',
    'Fix the named field; allowed keys are concurrency (≥ 1), maxQueued (≥ 0), maxNestingDepth (≥ 1) and onError.',
  );
}

/** @internal */
export function parseDrainOptions(value: unknown): { timeout?: number | undefined } {
  if (value === undefined) return {};
  return parse(drainSchema, value, 'drain()', 'Pass { timeout: ms } or nothing.');
}

/** @internal */
export function parseAlwaysValue(value: unknown): boolean {
  if (typeof value === 'boolean') return value;
  throw new DeferError(
    codes.ERR_DEFER_INVALID_OPTIONS,
    `DeferredCallback.always() expects a boolean, but received ${typeof value}. Call .always() or .always(false).`,
  );
}
