/**
 * Context isolation as a property (SPEC semantics 4 and 11, issue 5):
 * random interleavings of well over 10 000 scopes — withDefer() scopes under
 * fast-check's scheduler for the bulk, real HTTP requests on Express 5, Koa 3
 * and node:http for a few hundred — with random awaits (microtasks,
 * setImmediate, scheduler-controlled promises) between defer() calls. No
 * scope may ever see another's callbacks: not in currentCollection(), not in
 * the set of callbacks it runs, not through the AsyncLocalStorage values a
 * callback observes.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  currentCollection,
  defer,
  drain,
  withDefer,
  type DeferContext,
  type DeferErrorInfo,
  type Outcome,
} from '../../src/index.js';
import { harness, type Running } from '../support/adapters.js';
import { get } from '../support/client.js';
import { tick } from './support.js';

type AwaitHow = 'micro' | 'immediate' | 'sched';
type Step =
  | { t: 'defer'; always: boolean; named: boolean; then: 'none' | 'await' | 'defer' | 'scope' }
  | { t: 'await'; how: AwaitHow };

interface ScopePlan {
  mode: 'sequential' | 'parallel';
  fail: boolean;
  wait: boolean;
  steps: Step[];
}

/** What one scope observed and what it expects to run. */
interface ScopeState {
  id: string;
  /** Names this scope registered (top-level and nested), in order. */
  registered: string[];
  /** Names that must run, in registration order. */
  expected: string[];
  ran: string[];
  outcome: Partial<Outcome>;
}

/** A test-owned store: its value at each defer() call must be what that callback sees. */
const als = new AsyncLocalStorage<string>();

const violations: string[] = [];
const errors: [unknown, DeferErrorInfo][] = [];
const onError = (error: unknown, info: DeferErrorInfo) => void errors.push([error, info]);

function names(): string[] {
  return [...(currentCollection() ?? [])].map((cb) => cb.name);
}

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Checks that the collection seen here holds only this scope's callbacks that have not run yet. */
function checkCollection(state: ScopeState, where: string): void {
  const seen = names();
  const own = new Set(state.registered);
  const ran = new Set(state.ran);
  for (const name of seen) {
    if (!own.has(name)) violations.push(`${state.id} ${where}: collection holds a foreign callback ${name}`);
    else if (ran.has(name)) violations.push(`${state.id} ${where}: collection holds ${name}, which already ran`);
  }
}

function checkOutcome(state: ScopeState, outcome: Outcome, name: string): void {
  for (const [key, value] of Object.entries(state.outcome)) {
    if (!Object.is((outcome as unknown as Record<string, unknown>)[key], value)) {
      violations.push(`${state.id}: ${name} saw outcome.${key} = ${String((outcome as unknown as Record<string, unknown>)[key])}`);
    }
  }
}

/**
 * Registers one callback in the current scope, inside `als.run(label)`, and
 * records what must happen to it.
 */
function deferOne(state: ScopeState, step: Extract<Step, { t: 'defer' }>, label: string, passes: boolean, pause: (how: AwaitHow) => Promise<unknown>): void {
  let name = label;
  const fn = async (ctx: DeferContext) => {
    if (ctx.name !== name) violations.push(`${state.id}: callback ${name} got context.name ${ctx.name}`);
    if (als.getStore() !== label) violations.push(`${state.id}: callback ${name} saw ALS ${String(als.getStore())}, expected ${label}`);
    if (state.ran.includes(name)) violations.push(`${state.id}: callback ${name} ran twice`);
    state.ran.push(name);
    checkOutcome(state, ctx.outcome, name);
    checkCollection(state, `inside ${name}`);
    switch (step.then) {
      case 'await':
        await pause('sched');
        await pause('immediate');
        if (als.getStore() !== label) violations.push(`${state.id}: callback ${name} lost its ALS value across an await`);
        checkCollection(state, `inside ${name} after an await`);
        break;
      case 'defer':
        // A nested defer joins this scope under the same outcome.
        deferOne(state, { t: 'defer', always: step.always, named: !step.named, then: 'none' }, `${label}.n`, passes, pause);
        break;
      case 'scope': {
        // withDefer inside a callback opens a fresh scope of its own.
        const inner: ScopeState = { id: `${state.id}/${name}`, registered: [], expected: [], ran: [], outcome: { kind: 'scope', ok: true } };
        await withDefer(
          async () => {
            await pause('micro');
            deferOne(inner, { t: 'defer', always: false, named: true, then: 'none' }, `${label}.inner`, true, pause);
            checkCollection(inner, 'inner scope');
            if (!sameList(names(), inner.registered)) violations.push(`${inner.id}: inner collection ${names().join()} != ${inner.registered.join()}`);
          },
          { await: true, onError },
        );
        if (!sameList(inner.ran, inner.expected)) violations.push(`${inner.id}: ran ${inner.ran.join()} expected ${inner.expected.join()}`);
        checkCollection(state, `inside ${name} after its inner scope`);
        break;
      }
      case 'none':
        break;
    }
  };
  const cb = als.run(label, () => defer(fn, { ...(step.named ? { name: label } : {}), ...(step.always ? { always: true } : {}) }));
  name = cb.name;
  state.registered.push(name);
  if (passes || step.always) state.expected.push(name);
}

/** The body every scope runs: its steps, checking its collection after each. */
async function runSteps(state: ScopeState, steps: Step[], passes: boolean, pause: (how: AwaitHow) => Promise<unknown>): Promise<void> {
  for (const [k, step] of steps.entries()) {
    if (step.t === 'defer') deferOne(state, step, `${state.id}:${k}`, passes, pause);
    else await pause(step.how);
    if (als.getStore() !== state.id) violations.push(`${state.id}: ALS is ${String(als.getStore())} after step ${k}`);
    // The scope is still open: nothing has started, the collection is exactly what it registered.
    if (!sameList(names(), state.registered)) violations.push(`${state.id} step ${k}: collection ${names().join()} != ${state.registered.join()}`);
  }
}

function checkRuns(state: ScopeState, mode: 'sequential' | 'parallel'): void {
  const ok = mode === 'sequential' ? sameList(state.ran, state.expected) : sameList([...state.ran].sort(), [...state.expected].sort());
  if (!ok) violations.push(`${state.id} (${mode}): ran [${state.ran.join()}], expected [${state.expected.join()}]`);
}

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ t: fc.constant('defer' as const), always: fc.boolean(), named: fc.boolean(), then: fc.constantFrom('none', 'none', 'await', 'defer', 'scope') as fc.Arbitrary<'none' | 'await' | 'defer' | 'scope'> }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('await' as const), how: fc.constantFrom<AwaitHow>('micro', 'immediate', 'sched') }) },
);

const scopeArb: fc.Arbitrary<ScopePlan> = fc.record({
  mode: fc.constantFrom('sequential', 'parallel') as fc.Arbitrary<'sequential' | 'parallel'>,
  fail: fc.boolean(),
  wait: fc.boolean(),
  steps: fc.array(stepArb, { maxLength: 6 }),
});

describe('isolation under random interleavings', () => {
  it('withDefer scopes (≥ 10 000 in total) never see each other\'s callbacks', async () => {
    let total = 0;
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.scheduler(), fc.array(scopeArb, { minLength: 170, maxLength: 220 }), async (s, plans) => {
        violations.length = 0;
        errors.length = 0;
        const r = run++;
        const pause = (how: AwaitHow): Promise<unknown> =>
          how === 'micro' ? Promise.resolve() : how === 'immediate' ? tick() : s.schedule(Promise.resolve(), 'await');
        const states = plans.map((plan, i): ScopeState => ({
          id: `w${r}.${i}`,
          registered: [],
          expected: [],
          ran: [],
          outcome: plan.fail ? { kind: 'scope', ok: false, aborted: false } : { kind: 'scope', ok: true, aborted: false },
        }));
        const all = (async () => {
          await Promise.all(
            plans.map(async (plan, i) => {
              const state = states[i]!;
              const failure = { failed: state.id };
              try {
                await als.run(state.id, () =>
                  withDefer(
                    async () => {
                      await runSteps(state, plan.steps, !plan.fail, pause);
                      if (plan.fail) throw failure;
                    },
                    { mode: plan.mode, await: plan.wait, onError },
                  ),
                );
                if (plan.fail) violations.push(`${state.id}: withDefer resolved although fn threw`);
              } catch (error) {
                if (error !== failure) violations.push(`${state.id}: withDefer rejected with ${String(error)}`);
              }
              // With { await: true } every callback of the invocation has run by now.
              if (plan.wait) checkRuns(state, plan.mode);
            }),
          );
          await drain();
        })();
        let finished = false;
        void all.finally(() => (finished = true));
        while (!finished) {
          await s.waitIdle();
          await tick();
        }
        await all;
        for (const [i, state] of states.entries()) checkRuns(state, plans[i]!.mode);
        total += plans.length;
        expect(errors).toEqual([]);
        expect(violations).toEqual([]);
      }),
      { numRuns: 60 },
    );
    expect(total).toBeGreaterThanOrEqual(10_000);
  });

  describe('real HTTP requests on Express 5, Koa 3 and node:http', () => {
    const servers: Running[] = [];
    const plans = new Map<string, { state: ScopeState; steps: Step[] }>();
    const SERVERS = [
      { name: 'express 5', mode: 'sequential' },
      { name: 'koa 3', mode: 'parallel' },
      { name: 'node:http', mode: 'sequential' },
    ] as const;

    beforeAll(async () => {
      const pause = (how: AwaitHow): Promise<unknown> => (how === 'micro' ? Promise.resolve() : tick());
      const route = (status: number) => ({
        status,
        run: ({ url }: { url: string }) => {
          const id = new URL(url, 'http://x').searchParams.get('id')!;
          const plan = plans.get(id);
          if (plan === undefined) return undefined;
          return als.run(id, () => runSteps(plan.state, plan.steps, status < 400, pause));
        },
      });
      for (const server of SERVERS) {
        servers.push(await harness(server.name).listen({ '/ok': route(200), '/bad': route(500) }, { mode: server.mode, onError }));
      }
    });

    afterAll(async () => {
      await Promise.all(servers.map((server) => server.close()));
      await drain();
    });

    const requestArb = fc.record({
      server: fc.integer({ min: 0, max: SERVERS.length - 1 }),
      status: fc.constantFrom(200, 200, 500),
      // No scheduler-controlled awaits here: real sockets interleave the requests.
      steps: fc.array(
        fc.oneof(
          { weight: 3, arbitrary: fc.record({ t: fc.constant('defer' as const), always: fc.boolean(), named: fc.boolean(), then: fc.constantFrom('none', 'defer', 'scope') as fc.Arbitrary<'none' | 'defer' | 'scope'> }) },
          { weight: 2, arbitrary: fc.record({ t: fc.constant('await' as const), how: fc.constantFrom<AwaitHow>('micro', 'immediate') }) },
        ),
        { maxLength: 6 },
      ),
    });

    it('concurrent requests (a few hundred in total) never see each other\'s callbacks', async () => {
      let total = 0;
      let run = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(requestArb, { minLength: 30, maxLength: 40 }), async (requests) => {
          violations.length = 0;
          errors.length = 0;
          const r = run++;
          const states = requests.map((request, i) => {
            const id = `h${r}.${i}`;
            const state: ScopeState = {
              id,
              registered: [],
              expected: [],
              ran: [],
              outcome: { kind: 'http', statusCode: request.status, ok: request.status < 400, aborted: false },
            };
            plans.set(id, { state, steps: request.steps });
            return state;
          });
          const replies = await Promise.all(
            requests.map((request, i) => get(servers[request.server]!.port, `${request.status < 400 ? '/ok' : '/bad'}?id=${states[i]!.id}`)),
          );
          await drain();
          for (const [i, reply] of replies.entries()) expect(reply.status).toBe(requests[i]!.status);
          for (const [i, state] of states.entries()) {
            checkRuns(state, SERVERS[requests[i]!.server]!.mode);
            plans.delete(state.id);
          }
          total += requests.length;
          expect(errors).toEqual([]);
          expect(violations).toEqual([]);
        }),
        { numRuns: 10 },
      );
      expect(total).toBeGreaterThanOrEqual(300);
    });
  });
});
