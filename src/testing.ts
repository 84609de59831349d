import { AsyncResource } from 'node:async_hooks';
import { AssertionError } from 'node:assert';
import { forgetIn, DeferredCallback, runNow, Scope } from './core/engine.js';
import { type Override, S } from './core/state.js';
import { codes, DeferError } from './errors.js';
import { DEFAULT_SCOPE_OPTIONS } from './options.js';
import type { DeferContext, Outcome } from './types.js';

/** The outcome `runAll()` uses when none is given. */
export const PASSING_OUTCOME: Outcome = Object.freeze({ kind: 'http', statusCode: 200, ok: true, aborted: false });

/**
 * The testing fake `fakeDefer()` returns: from its creation until
 * `restore()`, every `defer()` in the process records instead of
 * scheduling, inside or outside a scope.
 */
export interface FakeDefer {
  /** The recorded callbacks, in order (`name`, `isAlways`, `options`). */
  readonly callbacks: readonly DeferredCallback[];
  /** How many callbacks are recorded. */
  readonly count: number;
  /**
   * Runs the recorded callbacks named `name` (all when omitted), whatever
   * `always` and status say, with a passing outcome, one after another;
   * removes them from `callbacks`. Rejects with the error a callback threw
   * (an `AggregateError` if several threw), after running the rest.
   */
  run(name?: string): Promise<void>;
  /**
   * Runs the recorded callbacks the production rules admit for `outcome`
   * (default: HTTP 200), one after another, then empties `callbacks`.
   * Skipped ones are discarded, as in production.
   */
  runAll(outcome?: Partial<Outcome>): Promise<void>;
  /** Asserts one callback named `name` (any callback when omitted) was deferred. */
  assertDeferred(name?: string): void;
  /** Asserts no callback named `name` was deferred. */
  assertNotDeferred(name: string): void;
  /** Asserts exactly `n` callbacks were deferred. */
  assertCount(n: number): void;
  /** Forgets every recorded callback. */
  clear(): void;
  /** Restores normal scheduling. Calling it again does nothing. */
  restore(): void;
}

class Fake implements FakeDefer, Override {
  readonly kind = 'fake' as const;
  private recorded: DeferredCallback[] = [];
  private readonly holder = new Scope(DEFAULT_SCOPE_OPTIONS, undefined, undefined);
  private readonly contexts = new WeakMap<DeferredCallback, AsyncResource>();
  private readonly previous: Override | undefined;
  private restored = false;

  constructor(previous: Override | undefined) {
    this.previous = previous;
  }

  // --- Override: what defer() and forget() call while the fake is installed

  defer(fn: (context: DeferContext) => unknown, options: DeferredCallback['options'] | undefined): DeferredCallback {
    const cb = new DeferredCallback(fn, this.holder, options, 0, false);
    if (cb.explicitName !== undefined) {
      // As in production: a same-name registration replaces the earlier one.
      this.recorded = this.recorded.filter((other) => other.explicitName !== cb.explicitName);
    }
    this.recorded.push(cb);
    this.contexts.set(cb, new AsyncResource('request-defer:fake'));
    return cb;
  }

  forget(name: string): boolean {
    const before = this.recorded.length;
    this.recorded = this.recorded.filter((cb) => cb.name !== name);
    return this.recorded.length !== before;
  }

  // --- FakeDefer

  get callbacks(): readonly DeferredCallback[] {
    return [...this.recorded];
  }

  get count(): number {
    return this.recorded.length;
  }

  run(name?: string): Promise<void> {
    this.live('run');
    if (name !== undefined && typeof name !== 'string') return Promise.reject(badFakeArg('run', 'name', name));
    const selected = name === undefined ? this.recorded : this.recorded.filter((cb) => cb.name === name);
    if (name !== undefined && selected.length === 0) {
      return Promise.reject(assertion(`run("${name}"): no deferred callback named "${name}"; deferred were: ${this.listing()}`));
    }
    return this.execute(new Set(selected), PASSING_OUTCOME, () => true);
  }

  runAll(outcome?: Partial<Outcome>): Promise<void> {
    this.live('runAll');
    const resolved = normalizeOutcome(outcome);
    return this.execute(new Set(this.recorded), resolved, (cb) => cb.isAlways || (!resolved.aborted && resolved.ok));
  }

  private async execute(selected: Set<DeferredCallback>, outcome: Outcome, admit: (cb: DeferredCallback) => boolean): Promise<void> {
    const errors: unknown[] = [];
    let batch = this.recorded.filter((cb) => selected.has(cb));
    this.recorded = this.recorded.filter((cb) => !selected.has(cb));
    let seen = this.recorded.length;
    while (batch.length > 0) {
      for (const cb of batch) {
        if (!admit(cb)) continue;
        try {
          await this.call(cb, outcome);
        } catch (error) {
          errors.push(error);
        }
      }
      // Callbacks recorded meanwhile (nested defers) run after the others.
      batch = this.recorded.slice(seen);
      this.recorded = this.recorded.slice(0, seen);
      seen = this.recorded.length;
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `${errors.length} deferred callbacks failed`);
  }

  private call(cb: DeferredCallback, outcome: Outcome): unknown {
    const context: DeferContext = { signal: new AbortController().signal, outcome, name: cb.name };
    const resource = this.contexts.get(cb);
    return resource === undefined ? cb.fn(context) : resource.runInAsyncScope(cb.fn, undefined, context);
  }

  assertDeferred(name?: string): void {
    this.live('assertDeferred');
    if (name === undefined) {
      if (this.recorded.length === 0) throw assertion('Expected at least one deferred callback; none were deferred');
      return;
    }
    if (typeof name !== 'string') throw badFakeArg('assertDeferred', 'name', name);
    if (!this.recorded.some((cb) => cb.name === name)) {
      throw assertion(`Expected a deferred callback named "${name}"; deferred were: ${this.listing()}`);
    }
  }

  assertNotDeferred(name: string): void {
    this.live('assertNotDeferred');
    if (typeof name !== 'string') throw badFakeArg('assertNotDeferred', 'name', name);
    if (this.recorded.some((cb) => cb.name === name)) {
      throw assertion(`Expected no deferred callback named "${name}"; deferred were: ${this.listing()}`);
    }
  }

  assertCount(n: number): void {
    this.live('assertCount');
    if (!Number.isInteger(n) || n < 0) throw badFakeArg('assertCount', 'n', n);
    if (this.recorded.length !== n) {
      throw assertion(
        `Expected ${n} deferred callback${n === 1 ? '' : 's'}; ${this.recorded.length} were deferred: ${this.listing()}`,
      );
    }
  }

  clear(): void {
    this.live('clear');
    this.recorded = [];
  }

  restore(): void {
    if (this.restored) return;
    this.restored = true;
    this.recorded = [];
    if (S.override === (this as Override)) S.override = this.previous;
  }

  [Symbol.dispose](): void {
    this.restore();
  }

  private live(method: string): void {
    if (this.restored) {
      throw new DeferError(
        codes.ERR_DEFER_FAKE_RESTORED,
        `fakeDefer().${method}() was called after restore(). Call fakeDefer() again for a new fake ` +
          `(for example in beforeEach), and restore it in afterEach.`,
      );
    }
  }

  /** `"audit-login" (always), <anonymous> ×2`: what was deferred, grouped. */
  private listing(): string {
    if (this.recorded.length === 0) return 'nothing';
    const groups = new Map<string, number>();
    for (const cb of this.recorded) {
      const label = `${cb.explicitName === undefined ? '<anonymous>' : JSON.stringify(cb.explicitName)}${cb.isAlways ? ' (always)' : ''}`;
      groups.set(label, (groups.get(label) ?? 0) + 1);
    }
    return [...groups].map(([label, n]) => (n === 1 ? label : `${label} ×${n}`)).join(', ');
  }
}

function normalizeOutcome(outcome: Partial<Outcome> | undefined): Outcome {
  if (outcome === undefined) return PASSING_OUTCOME;
  if (typeof outcome !== 'object' || outcome === null) {
    throw new DeferError(
      codes.ERR_DEFER_INVALID_OPTIONS,
      `fakeDefer().runAll() expects an outcome object such as { statusCode: 500 } or { aborted: true }, but received ${typeof outcome}.`,
    );
  }
  const kind = outcome.kind ?? 'http';
  const aborted = outcome.aborted ?? false;
  const statusCode = outcome.statusCode ?? (kind === 'http' && !aborted ? 200 : undefined);
  const ok = outcome.ok ?? (!aborted && (kind === 'scope' ? outcome.error === undefined : (statusCode ?? 200) < 400));
  return Object.freeze({ ...outcome, kind, aborted, ok, ...(statusCode === undefined ? {} : { statusCode }) });
}

function assertion(message: string): AssertionError {
  const error = new AssertionError({ message });
  error.generatedMessage = false;
  return error;
}

function badFakeArg(method: string, field: string, value: unknown): DeferError {
  return new DeferError(
    codes.ERR_DEFER_INVALID_OPTIONS,
    `fakeDefer().${method}() received an invalid ${field} (${typeof value}). ` +
      (field === 'n' ? 'Pass a whole number ≥ 0.' : 'Pass the callback name given to defer(fn, { name }).'),
  );
}

/**
 * Replaces scheduling with recording, process-wide (every async context,
 * every copy of the package) until `restore()`. `defer()` then works inside
 * and outside a scope and returns the `DeferredCallback`; `waitUntil()` is
 * still tracked by `drain()`.
 *
 * @example
 * ```ts
 * import { fakeDefer } from 'request-defer/testing';
 *
 * const fake = fakeDefer();
 * await signUp({ email: 'ada@example.com' });
 * fake.assertDeferred('welcome-mail');
 * await fake.runAll({ statusCode: 201 });
 * expect(mailer.sent).toHaveLength(1);
 * fake.restore();
 * ```
 */
export function fakeDefer(): FakeDefer {
  if (S.override?.kind === 'fake') {
    throw new DeferError(
      codes.ERR_DEFER_FAKE_ACTIVE,
      'fakeDefer() was called while another fake is active. Call restore() on the first fake ' +
        '(for example in afterEach) before creating a new one, or reuse it with clear().',
    );
  }
  const fake = new Fake(S.override);
  S.override = fake;
  return fake;
}

/**
 * Makes every `defer()` in the process run its callback at once, inside
 * the `defer()` call (as Laravel's `withoutDefer()`), with outcome
 * `{ kind: 'scope', ok: true, aborted: false }`, no status check and no
 * scheduler limit. Timeouts apply, errors are reported as usual, and an
 * async callback's promise is tracked by `drain()`. Returns the function
 * that restores normal scheduling.
 *
 * @example
 * ```ts
 * import { drain } from 'request-defer';
 * import { withoutDefer } from 'request-defer/testing';
 *
 * const restore = withoutDefer();
 * await signUp({ email: 'ada@example.com' }); // the welcome mail is sent inline
 * await drain();
 * restore();
 * ```
 */
export function withoutDefer(): () => void {
  const previous = S.override;
  const override: Override = {
    kind: 'without',
    defer: (fn, options) => runNow(S.als.getStore(), fn, options),
    forget: (name) => {
      const coll = S.als.getStore()?.scope.coll;
      return coll === undefined ? false : forgetIn(coll, name);
    },
  };
  S.override = override;
  return function restoreDefer(): void {
    if (S.override === override) S.override = previous;
  };
}

export type { DeferredCallback, Outcome };
