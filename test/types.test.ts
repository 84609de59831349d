/** The public types. `npm run typecheck` (tsc over test/) makes these assertions count. */
import { describe, expectTypeOf, it } from 'vitest';
import {
  configureDefer,
  currentCollection,
  defer,
  deferStats,
  drain,
  forget,
  waitUntil,
  withDefer,
  DeferError,
  DeferredCallback,
  DeferredCallbackCollection,
  type DeferConfig,
  type DeferContext,
  type DeferErrorCode,
  type DeferErrorInfo,
  type DeferOptions,
  type DeferScopeOptions,
  type DeferStats,
  type DrainSummary,
  type Outcome,
} from '../src/index.js';
import { deferMiddleware as expressMiddleware } from '../src/express.js';
import { deferMiddleware as koaMiddleware } from '../src/koa.js';
import { withDeferHandler } from '../src/node.js';
import { fakeDefer, withoutDefer, type FakeDefer } from '../src/testing.js';
import { deferDispatch } from '../src/bullmq.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import express from 'express';
import Koa from 'koa';

describe('public types', () => {
  it('root API', () => {
    expectTypeOf(defer).parameter(0).toEqualTypeOf<(context: DeferContext) => unknown>();
    expectTypeOf(defer).parameter(1).toEqualTypeOf<DeferOptions | undefined>();
    expectTypeOf(defer).returns.toEqualTypeOf<DeferredCallback>();
    expectTypeOf<DeferredCallback['name']>().toEqualTypeOf<string>();
    expectTypeOf<DeferredCallback['isAlways']>().toEqualTypeOf<boolean>();
    expectTypeOf<ReturnType<DeferredCallback['always']>>().toEqualTypeOf<DeferredCallback>();
    expectTypeOf(forget).returns.toEqualTypeOf<boolean>();
    expectTypeOf(waitUntil).returns.toEqualTypeOf<undefined>();
    expectTypeOf(withDefer(async () => 42)).toEqualTypeOf<Promise<number>>();
    expectTypeOf(withDefer(() => 'x', { await: true })).toEqualTypeOf<Promise<string>>();
    expectTypeOf(drain).returns.toEqualTypeOf<Promise<DrainSummary>>();
    expectTypeOf(currentCollection).returns.toEqualTypeOf<DeferredCallbackCollection | undefined>();
    expectTypeOf<DeferredCallbackCollection['size']>().toEqualTypeOf<number>();
    expectTypeOf<DeferredCallbackCollection>().toMatchTypeOf<Iterable<DeferredCallback>>();
    expectTypeOf(configureDefer).parameter(0).toEqualTypeOf<DeferConfig>();
    expectTypeOf(deferStats).returns.toEqualTypeOf<DeferStats>();
    expectTypeOf<DeferError['code']>().toEqualTypeOf<DeferErrorCode>();
    expectTypeOf<'ERR_DEFER_NO_SCOPE'>().toMatchTypeOf<DeferErrorCode>();
    expectTypeOf<DrainSummary>().toEqualTypeOf<{ completed: number; failed: number; abandoned: number }>();
  });

  it('context, outcome and error info', () => {
    expectTypeOf<DeferContext['signal']>().toEqualTypeOf<AbortSignal>();
    expectTypeOf<DeferContext['outcome']>().toEqualTypeOf<Outcome>();
    expectTypeOf<Outcome['kind']>().toEqualTypeOf<'http' | 'scope'>();
    expectTypeOf<Outcome['statusCode']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<DeferErrorInfo['phase']>().toEqualTypeOf<'callback' | 'timeout' | 'overflow' | 'abandoned'>();
    expectTypeOf<DeferScopeOptions['mode']>().toEqualTypeOf<'sequential' | 'parallel' | undefined>();
  });

  it('adapters accept plain node:http types', () => {
    expectTypeOf(expressMiddleware()).parameters.toEqualTypeOf<[IncomingMessage, ServerResponse, (error?: unknown) => void]>();
    expectTypeOf(koaMiddleware()).returns.toEqualTypeOf<Promise<unknown>>();
    const handler = (_req: IncomingMessage, _res: ServerResponse) => 7;
    expectTypeOf(withDeferHandler(handler)).toEqualTypeOf<(req: IncomingMessage, res: ServerResponse) => number>();
  });

  it('testing and bullmq entries', () => {
    expectTypeOf(fakeDefer).returns.toEqualTypeOf<FakeDefer>();
    expectTypeOf(withoutDefer).returns.toEqualTypeOf<(() => void) & Disposable>();
    expectTypeOf(deferDispatch).returns.toEqualTypeOf<DeferredCallback>();
  });

  it('an option given as undefined type-checks under exactOptionalPropertyTypes (it restores the default)', () => {
    // tsconfig.json sets exactOptionalPropertyTypes, as `tsc --init` does: without `| undefined`
    // on each option these lines would not compile (TS2379) though the runtime accepts them.
    const unset = undefined as undefined;
    expectTypeOf<DeferConfig>().toMatchTypeOf<{ concurrency?: number | undefined }>();
    expectTypeOf({ concurrency: unset, maxQueued: unset, maxNestingDepth: unset, onError: unset }).toMatchTypeOf<DeferConfig>();
    expectTypeOf({ name: unset, always: unset, timeout: unset }).toMatchTypeOf<DeferOptions>();
    expectTypeOf({ runWhen: unset, mode: unset, onError: unset, timeout: unset, await: unset }).toMatchTypeOf<DeferScopeOptions>();
    expectTypeOf(drain).toBeCallableWith({ timeout: unset });
    expectTypeOf(expressMiddleware).toBeCallableWith({ onError: unset });
    expectTypeOf(koaMiddleware).toBeCallableWith({ timeout: unset });
    expectTypeOf(deferDispatch).toBeCallableWith({ add: async () => undefined }, 'job', {}, undefined, { name: unset });
  });

  it('the middlewares fit Express and Koa typings without casts', () => {
    const app = express();
    app.use(expressMiddleware());
    app.use('/admin', expressMiddleware({ mode: 'parallel' }));
    express.Router().use(expressMiddleware());
    new Koa().use(koaMiddleware());
    expectTypeOf(app).not.toBeAny();
  });
});
