import { AsyncLocalStorage, AsyncResource } from 'node:async_hooks';
import { AssertionError } from 'node:assert';
import { DeferredCallback, forgetIn, register, report, runNow, Scope } from './core/engine.js';
import { type Override, S } from './core/state.js';
import { codes, DeferError, describe, noScopeError } from './errors.js';
import { DEFAULT_SCOPE_OPTIONS } from './options.js';
import type { DeferContext, DeferOptions, Outcome } from './types.js';

/*
 * request-defer/testing: the fake (`fakeDefer()`) and the inline mode
 * (`withoutDefer()`). Both install an `Override` on the process-wide state,
 * which `defer()` and `forget()` of every copy of the package consult first.
 * Overrides stack: each remembers the one it replaced (`previous`), and
 * restoring one that is no longer on top unlinks it from the stack, so
 * restoring in any order never revives a restored override.
 */

/** The outcome `runAll()` uses when none is given, and the one `run()` always uses. */
export const PASSING_OUTCOME: Outcome = Object.freeze({ kind: 'http', statusCode: 200, ok: true, aborted: false });

/**
 * The testing fake `fakeDefer()` returns: from its creation until
 * `restore()`, every `defer()` in the process records instead of
 * scheduling, inside or outside a scope. Disposable: `using fake = fakeDefer()`
 * restores it at the end of the block.
 */
export interface FakeDefer extends Disposable {
  /** The recorded callbacks not yet run, forgotten or cleared, in record order (`name`, `isAlways`, `options`). */
  readonly callbacks: readonly DeferredCallback[];
  /** How many callbacks are recorded. */
  readonly count: number;
  /**
   * Runs the recorded callbacks named `name` (all when omitted), whatever
   * `always` and status say, with a passing outcome (HTTP 200), one after
   * another in record order, then the callbacks they deferred; removes what
   * it ran from `callbacks`. Keeps going when one throws, then rejects with
   * that error (an `AggregateError` if several threw). Never calls `onError`.
   * Rejects with an `AssertionError` when no callback named `name` is recorded.
   */
  run(name?: string): Promise<void>;
  /**
   * Runs the recorded callbacks the production rules admit for `outcome`
   * (`always` callbacks, and the others when the outcome passes the scope's
   * `runWhen`, by default `ok`; only `always` ones on an abort), one after
   * another, then the callbacks they deferred, and empties `callbacks`:
   * skipped ones are discarded, as in production. `outcome` may be partial
   * (`{ statusCode: 500 }`, `{ aborted: true }`, `{ kind: 'scope', error }`);
   * the default is HTTP 200. Rejects like `run()`.
   */
  runAll(outcome?: Partial<Outcome>): Promise<void>;
  /** Asserts at least one callback named `name` (any callback when omitted) is recorded. */
  assertDeferred(name?: string): void;
  /** Asserts no callback named `name` is recorded. */
  assertNotDeferred(name: string): void;
  /** Asserts exactly `n` callbacks are recorded. */
  assertCount(n: number): void;
  /** Forgets every recorded callback. */
  clear(): void;
  /** Restores normal scheduling. Calling it again does nothing. */
  restore(): void;
}

/** An override that knows the one it replaced, so it can be unlinked in any order. */
interface Link extends Override {
  previous: Override | undefined;
}

function install(link: Link): void {
  link.previous = S.override;
  S.override = link;
}

/** Removes `link` from the override stack, wherever it is. */
function unlink(link: Link): void {
  if (S.override === link) {
    S.override = link.previous;
    return;
  }
  for (let above = S.override as Link | undefined; above !== undefined; above = above.previous as Link | undefined) {
    if (above.previous === link) {
      above.previous = link.previous;
      return;
    }
  }
}

/** The production path of `defer()`, for a call that reaches a restored override. */
function deferNormally(previous: Override | undefined, fn: (context: DeferContext) => unknown, options: DeferOptions | undefined): DeferredCallback {
  if (previous !== undefined) return previous.defer(fn, options);
  const frame = S.als.getStore();
  if (frame === undefined) throw noScopeError('defer()');
  return register(frame, fn, options);
}

function forgetNormally(previous: Override | undefined, name: string): boolean {
  if (previous !== undefined) return previous.forget(name);
  const scope = S.als.getStore()?.scope;
  return scope === undefined ? false : forgetIn(scope, name);
}

/** One recorded `defer()` call. */
interface Recorded {
  readonly cb: DeferredCallback;
  /** The scope `defer()` was called in (`undefined` outside any): names replace, and `forget()` removes, within it. */
  readonly scope: Scope | undefined;
  /** The async context of the `defer()` call, restored when the fake runs the callback. */
  readonly resource: AsyncResource;
  /** The run()/runAll() whose callback recorded it (a nested defer()), so that run picks it up. */
  readonly by: Execution | undefined;
}

/** One run()/runAll() call. */
interface Execution {
  /** What failed, with who failed, for the rejection. */
  readonly failures: { error: unknown; who: string }[];
  /** Set once the call settled: a refusal made later is reported instead. */
  done: boolean;
}

/** What the fake's async context holds while it runs a callback. */
interface Running {
  readonly generation: number;
  readonly execution: Execution;
}

/** How a record left `callbacks`, for assertion messages. */
type Gone = 'already run' | 'skipped by runAll()' | 'forgotten' | 'replaced';

let running: AsyncLocalStorage<Running> | undefined;

class Fake implements FakeDefer, Link {
  readonly kind = 'fake' as const;
  previous: Override | undefined = undefined;
  private records: Recorded[] = [];
  /** Records that left `callbacks` since the fake was made or cleared: assertion messages name them. */
  private gone: { label: string; how: Gone }[] = [];
  private readonly holder = new Scope(DEFAULT_SCOPE_OPTIONS, undefined, undefined);
  private restored = false;

  constructor() {
    // Bound, so `const { assertDeferred, runAll } = fakeDefer()` works.
    const self = this as unknown as Record<string, unknown>;
    for (const method of ['run', 'runAll', 'assertDeferred', 'assertNotDeferred', 'assertCount', 'clear', 'restore'] as const) {
      self[method] = this[method].bind(this);
    }
  }

  // --- Override: what defer() and forget() of every copy call while the fake is installed

  defer(fn: (context: DeferContext) => unknown, options: DeferOptions | undefined): DeferredCallback {
    if (this.restored) return deferNormally(this.previous, fn, options);
    const run = running?.getStore();
    const frame = S.als.getStore();
    const generation = run === undefined ? (frame?.childGen ?? 0) : run.generation + 1;
    const cb = new DeferredCallback(fn, this.holder, options, generation);
    if (run !== undefined && generation > S.config.maxNestingDepth) {
      const error = new DeferError(
        codes.ERR_DEFER_OVERFLOW,
        `Deferred callback "${cb.name}" was refused: it would be generation ${generation} of nested defer() ` +
          `calls, above maxNestingDepth (${S.config.maxNestingDepth}). A callback that defers itself ` +
          `forever is a loop; raise maxNestingDepth with configureDefer() if the depth is intended.`,
      );
      // As in production the call does not throw: the run that caused it rejects with the error,
      // or, if that run already settled (the defer() came from work the callback left running), it
      // is reported as production reports a refusal.
      if (run.execution.done) report(frame?.scope, error, 'overflow', cb.name);
      else run.execution.failures.push({ error, who: label(cb) });
      return cb;
    }
    const scope = frame?.scope;
    if (cb.explicitName !== undefined) {
      // As in production: a same-name registration in the same scope replaces the earlier one.
      const i = this.records.findIndex((r) => r.scope === scope && r.cb.explicitName === cb.explicitName);
      if (i >= 0) this.remove(i, 'replaced');
    }
    this.records.push({ cb, scope, resource: new AsyncResource('request-defer:fake'), by: run?.execution });
    return cb;
  }

  forget(name: string): boolean {
    if (this.restored) return forgetNormally(this.previous, name);
    const scope = S.als.getStore()?.scope;
    const i = this.records.findIndex((r) => r.scope === scope && r.cb.name === name);
    if (i < 0) return false;
    this.remove(i, 'forgotten');
    return true;
  }

  private remove(i: number, how: Gone): void {
    const [r] = this.records.splice(i, 1);
    this.gone.push({ label: label(r!.cb), how });
  }

  // --- FakeDefer

  get callbacks(): readonly DeferredCallback[] {
    this.live('callbacks');
    return Object.freeze(this.records.map((r) => r.cb));
  }

  get count(): number {
    this.live('count');
    return this.records.length;
  }

  run(name?: string): Promise<void> {
    try {
      this.live('run');
      if (name !== undefined && typeof name !== 'string') throw badFakeArg('run', 'name', name);
    } catch (error) {
      return Promise.reject(error);
    }
    if (name !== undefined && !this.records.some((r) => r.cb.name === name)) {
      return Promise.reject(
        assertion(
          `fakeDefer().run(${JSON.stringify(name)}): no deferred callback named ${JSON.stringify(name)} is recorded; ` +
            `${this.listing()}`,
          Fake.prototype.run,
        ),
      );
    }
    const selected = name === undefined ? this.records : this.records.filter((r) => r.cb.name === name);
    return this.execute(selected, PASSING_OUTCOME, true);
  }

  runAll(outcome?: Partial<Outcome>): Promise<void> {
    let resolved: Outcome;
    try {
      this.live('runAll');
      resolved = normalizeOutcome(outcome);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.execute(this.records, resolved, false);
  }

  /**
   * Runs `selected`, then what was recorded while they ran, and so on.
   * `everything`: run() (no rule applies); else runAll(), which judges
   * `runWhen` once per scope, as production does.
   */
  private async execute(selected: readonly Recorded[], outcome: Outcome, everything: boolean): Promise<void> {
    const execution: Execution = { failures: [], done: false };
    const failures = execution.failures;
    const judged = new Map<Scope | undefined, boolean>();
    const admit = (r: Recorded): boolean => {
      if (everything || r.cb.isAlways) return true;
      if (outcome.aborted) return false; // runWhen is not consulted on aborts
      let ok = judged.get(r.scope);
      if (ok === undefined) {
        const runWhen = r.scope?.opts.runWhen;
        if (runWhen === undefined) ok = outcome.ok;
        else {
          try {
            ok = runWhen(outcome) === true;
          } catch (error) {
            ok = false; // counts as false, as in production; the run rejects with it
            failures.push({ error, who: "the scope's runWhen()" });
          }
        }
        judged.set(r.scope, ok);
      }
      return ok;
    };
    let batch = [...selected];
    try {
      while (batch.length > 0) {
        for (const r of batch) {
          const i = this.records.indexOf(r);
          if (i < 0) continue; // forgotten, replaced or cleared while earlier callbacks ran
          const admitted = admit(r);
          this.remove(i, admitted ? 'already run' : 'skipped by runAll()'); // skipped: discarded, as in production
          if (!admitted) continue;
          try {
            await this.call(r, outcome, execution);
          } catch (error) {
            failures.push({ error, who: label(r.cb) });
          }
        }
        // What these callbacks deferred meanwhile (nested defers) runs after them; what anything
        // else recorded meanwhile (another test, the code under test) stays recorded.
        batch = this.records.filter((r) => r.by === execution);
      }
    } finally {
      execution.done = true;
    }
    if (failures.length === 1) throw failures[0]!.error;
    if (failures.length > 1) {
      throw new AggregateError(
        failures.map((f) => f.error),
        `${failures.length} deferred callbacks failed: ${failures.map((f) => f.who).join(', ')}`,
      );
    }
  }

  private call(r: Recorded, outcome: Outcome, execution: Execution): unknown {
    const context: DeferContext = Object.freeze({ signal: new AbortController().signal, outcome, name: r.cb.name });
    const store: Running = { generation: r.cb.generation, execution };
    running ??= new AsyncLocalStorage<Running>();
    return r.resource.runInAsyncScope(runIn, undefined, running, store, r.cb.fn, context);
  }

  assertDeferred(name?: string): void {
    this.live('assertDeferred');
    if (name === undefined) {
      if (this.records.length === 0) {
        throw assertion(`Expected at least one deferred callback; ${this.listing()}`, Fake.prototype.assertDeferred);
      }
      return;
    }
    if (typeof name !== 'string') throw badFakeArg('assertDeferred', 'name', name);
    if (!this.records.some((r) => r.cb.name === name)) {
      throw assertion(`Expected a deferred callback named ${JSON.stringify(name)}; ${this.listing()}`, Fake.prototype.assertDeferred);
    }
  }

  assertNotDeferred(name: string): void {
    this.live('assertNotDeferred');
    if (typeof name !== 'string') throw badFakeArg('assertNotDeferred', 'name', name);
    if (this.records.some((r) => r.cb.name === name)) {
      throw assertion(`Expected no deferred callback named ${JSON.stringify(name)}; ${this.listing()}`, Fake.prototype.assertNotDeferred);
    }
  }

  assertCount(n: number): void {
    this.live('assertCount');
    if (!Number.isInteger(n) || n < 0) throw badFakeArg('assertCount', 'n', n);
    const actual = this.records.length;
    if (actual !== n) {
      const error = assertion(
        `Expected ${n} deferred callback${n === 1 ? '' : 's'}; ` +
          (actual === 0 ? this.listing() : `${actual} ${actual === 1 ? 'was' : 'were'} deferred: ${this.names()}${this.history(' (', ')')}`),
        Fake.prototype.assertCount,
      );
      error.actual = actual;
      error.expected = n;
      error.operator = 'strictEqual';
      throw error;
    }
  }

  clear(): void {
    this.live('clear');
    this.records = [];
    this.gone = [];
  }

  restore(): void {
    if (this.restored) return;
    this.restored = true;
    this.records = [];
    this.gone = [];
    unlink(this);
  }

  [Symbol.dispose](): void {
    this.restore();
  }

  private live(member: string): void {
    if (this.restored) {
      throw new DeferError(
        codes.ERR_DEFER_FAKE_RESTORED,
        `fakeDefer().${member} was used after restore(). Call fakeDefer() again for a new fake ` +
          `(for example in beforeEach), and restore it in afterEach.`,
      );
    }
  }

  /**
   * `deferred were: "audit-login" (always), <anonymous> ×2`, or `nothing was
   * deferred`; with what already left the record when anything did:
   * `nothing is recorded now (already run: "welcome-mail")`.
   */
  private listing(): string {
    if (this.records.length > 0) return `deferred were: ${this.names()}${this.history(' (', ')')}`;
    return this.gone.length === 0 ? 'nothing was deferred' : `nothing is recorded now${this.history(' (', ')')}`;
  }

  /** `"audit-login" (always), <anonymous> ×2`: what is recorded, grouped, in order of first appearance. */
  private names(): string {
    return grouped(this.records.map((r) => label(r.cb)));
  }

  /** `already run: "a", <anonymous>; forgotten: "b"`, wrapped in `open`…`close`; empty when nothing left. */
  private history(open: string, close: string): string {
    if (this.gone.length === 0) return '';
    const byHow = new Map<Gone, string[]>();
    for (const { label: l, how } of this.gone) {
      const list = byHow.get(how);
      if (list === undefined) byHow.set(how, [l]);
      else list.push(l);
    }
    return `${open}${[...byHow].map(([how, labels]) => `${how}: ${grouped(labels)}`).join('; ')}${close}`;
  }
}

/** `"welcome-mail"`, `"audit" (always)`, `<anonymous>`: a callback as assertion messages name it. */
function label(cb: DeferredCallback): string {
  return `${cb.explicitName === undefined ? '<anonymous>' : JSON.stringify(cb.explicitName)}${cb.isAlways ? ' (always)' : ''}`;
}

/** Equal labels grouped, in order of first appearance: `"a", <anonymous> ×2`. */
function grouped(labels: readonly string[]): string {
  const groups = new Map<string, number>();
  for (const l of labels) groups.set(l, (groups.get(l) ?? 0) + 1);
  return [...groups].map(([l, n]) => (n === 1 ? l : `${l} ×${n}`)).join(', ');
}

function runIn(
  als: AsyncLocalStorage<Running>,
  store: Running,
  fn: (context: DeferContext) => unknown,
  context: DeferContext,
): unknown {
  return als.run(store, fn, context);
}

const OUTCOME_KEYS = new Set(['kind', 'statusCode', 'ok', 'aborted', 'error']);

/**
 * Completes a partial outcome the way production builds one, and refuses
 * what production never produces (a typo such as `status`, `ok: true` with
 * status 500), so a test cannot pass by running under an outcome it did not mean.
 */
function normalizeOutcome(outcome: Partial<Outcome> | undefined): Outcome {
  if (outcome === undefined) return PASSING_OUTCOME;
  if (typeof outcome !== 'object' || outcome === null || Array.isArray(outcome)) {
    throw badOutcome(`expected an object, but received ${describe(outcome)}`);
  }
  for (const key of Object.keys(outcome)) {
    if (!OUTCOME_KEYS.has(key)) throw badOutcome(`unknown key ${JSON.stringify(key)}`);
  }
  const { kind = 'http', statusCode, ok, aborted } = outcome;
  if (kind !== 'http' && kind !== 'scope') throw badOutcome(`kind must be 'http' or 'scope', not ${describe(kind)}`);
  if (ok !== undefined && typeof ok !== 'boolean') throw badOutcome(`ok must be a boolean, not ${describe(ok)}`);
  if (aborted !== undefined && typeof aborted !== 'boolean') throw badOutcome(`aborted must be a boolean, not ${describe(aborted)}`);
  if (kind === 'scope') {
    if (statusCode !== undefined) throw badOutcome(`a 'scope' outcome has no statusCode`);
    if (aborted === true) throw badOutcome(`a 'scope' outcome is never aborted`);
    const failed = Object.hasOwn(outcome, 'error');
    if (ok === true && failed) throw badOutcome(`a 'scope' outcome with an error is not ok`);
    if (ok === false || failed) return Object.freeze({ kind, ok: false, aborted: false, error: outcome.error });
    return Object.freeze({ kind, ok: true, aborted: false });
  }
  if (Object.hasOwn(outcome, 'error')) throw badOutcome(`error is only set on 'scope' outcomes`);
  if (statusCode !== undefined && (!Number.isInteger(statusCode) || statusCode < 100 || statusCode > 999)) {
    throw badOutcome(`statusCode must be an HTTP status (100–999), not ${describe(statusCode)}`);
  }
  if (aborted === true) {
    if (ok === true) throw badOutcome('an aborted outcome is not ok');
    return Object.freeze(
      statusCode === undefined ? { kind, ok: false, aborted: true } : { kind, statusCode, ok: false, aborted: true },
    );
  }
  const status = statusCode ?? (ok === false ? 500 : 200);
  if (ok !== undefined && ok !== status < 400) {
    throw badOutcome(`ok: ${ok} contradicts statusCode ${status} (ok is statusCode < 400)`);
  }
  return Object.freeze({ kind, statusCode: status, ok: status < 400, aborted: false });
}

function badOutcome(why: string): DeferError {
  return new DeferError(
    codes.ERR_DEFER_INVALID_OPTIONS,
    `fakeDefer().runAll() received an invalid outcome: ${why}. Pass nothing (HTTP 200) or a partial outcome ` +
      `such as { statusCode: 500 }, { aborted: true } or { kind: 'scope', error }.`,
  );
}

function assertion(message: string, stackStartFn: (...args: never[]) => unknown): AssertionError {
  return new AssertionError({ message, stackStartFn });
}

function badFakeArg(method: string, field: string, value: unknown): DeferError {
  return new DeferError(
    codes.ERR_DEFER_INVALID_OPTIONS,
    `fakeDefer().${method}() received an invalid ${field} (${describe(value)}). ` +
      (field === 'n' ? 'Pass a whole number ≥ 0.' : 'Pass the callback name given to defer(fn, { name }).'),
  );
}

/**
 * Replaces scheduling with recording, process-wide (every async context,
 * every copy of the package) until `restore()`. `defer()` then works inside
 * and outside a scope and returns the `DeferredCallback`; `forget(name)`
 * removes the record; `waitUntil()` is still tracked by `drain()`. Throws
 * `ERR_DEFER_FAKE_ACTIVE` while another fake is active.
 *
 * @example
 * ```ts
 * import { fakeDefer } from 'request-defer/testing';
 *
 * const fake = fakeDefer();
 * await signUp('ada@example.com');
 * fake.assertDeferred('welcome-mail');
 * await fake.runAll({ statusCode: 201 });
 * expect(mailer.sent).toEqual(['ada@example.com']);
 * fake.restore();
 * ```
 */
export function fakeDefer(): FakeDefer {
  for (let o = S.override as Link | undefined; o !== undefined; o = o.previous as Link | undefined) {
    if (o.kind === 'fake') {
      throw new DeferError(
        codes.ERR_DEFER_FAKE_ACTIVE,
        'fakeDefer() was called while another fake is active (the fake is process-wide). Call restore() on the ' +
          'first fake (for example in afterEach) before creating a new one, or reuse it with clear(). Tests that ' +
          'run concurrently share one fake: see docs/testing.md.',
      );
    }
  }
  const fake = new Fake();
  install(fake);
  return fake;
}

/**
 * Makes every `defer()` in the process run its callback at once, inside
 * the `defer()` call (as Laravel's `withoutDefer()`), with outcome
 * `{ kind: 'scope', ok: true, aborted: false }`, no status check and no
 * scheduler limit. Timeouts apply, errors are reported as usual (the
 * scope's `onError`, else `configureDefer`'s, else stderr), and an async
 * callback's promise is tracked by `drain()`. Returns the function that
 * restores normal scheduling (idempotent; also disposable with `using`).
 *
 * @example
 * ```ts
 * import { drain } from 'request-defer';
 * import { withoutDefer } from 'request-defer/testing';
 *
 * const restore = withoutDefer();
 * await signUp('ada@example.com'); // the welcome mail is sent inside defer()
 * await drain();                   // and its promise has settled
 * restore();
 * ```
 */
export function withoutDefer(): (() => void) & Disposable {
  let restored = false;
  const link: Link = {
    kind: 'without',
    previous: undefined,
    defer: (fn, options) => (restored ? deferNormally(link.previous, fn, options) : runNow(S.als.getStore(), fn, options)),
    forget: (name) => forgetNormally(restored ? link.previous : undefined, name),
  };
  install(link);
  const restore = function restoreDefer(): void {
    if (restored) return;
    restored = true;
    unlink(link);
  };
  return Object.assign(restore, { [Symbol.dispose]: restore });
}

export type { DeferredCallback, Outcome };
