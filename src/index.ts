export {
  configureDefer,
  currentCollection,
  defer,
  deferStats,
  drain,
  forget,
  waitUntil,
  withDefer,
} from './api.js';
export { DeferredCallback, DeferredCallbackCollection } from './core/engine.js';
export { DeferError } from './errors.js';
export type {
  DeferCallbackFn,
  DeferConfig,
  DeferContext,
  DeferErrorCode,
  DeferErrorHandler,
  DeferErrorInfo,
  DeferOptions,
  DeferScopeOptions,
  DeferStats,
  DrainSummary,
  Outcome,
} from './types.js';
