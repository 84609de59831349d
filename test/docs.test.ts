/**
 * The docs are kept true by this file:
 *  - every example in docs/ is a file in docs/examples/ that runs here and whose result is checked;
 *  - every ```ts block in the docs this suite owns is either such an example, byte for byte
 *    (imports rewritten to the package name), or a signature block whose names are real exports;
 *  - every export of every entry point appears in docs/api.md;
 *  - every decision in docs/decisions.md has a test below.
 */
import dc from 'node:diagnostics_channel';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as root from '../src/index.js';
import { configureDefer, defer, deferStats, drain, forget, withDefer, type Outcome } from '../src/index.js';
import * as bullmqEntry from '../src/bullmq.js';
import * as expressEntry from '../src/express.js';
import * as koaEntry from '../src/koa.js';
import * as nodeEntry from '../src/node.js';
import * as testingEntry from '../src/testing.js';
import { setTimers } from '../src/core/state.js';
import * as apiBullmq from '../docs/examples/api-bullmq.js';
import * as apiCollection from '../docs/examples/api-collection.js';
import * as apiConfigure from '../docs/examples/api-configure.js';
import * as apiDefer from '../docs/examples/api-defer.js';
import * as apiDrain from '../docs/examples/api-drain.js';
import * as apiExpress from '../docs/examples/api-express.js';
import * as apiKoa from '../docs/examples/api-koa.js';
import * as apiNode from '../docs/examples/api-node.js';
import * as apiTesting from '../docs/examples/api-testing.js';
import * as apiWaitUntil from '../docs/examples/api-waituntil.js';
import * as apiWithDefer from '../docs/examples/api-withdefer.js';
import * as concepts from '../docs/examples/concepts.js';
import * as errorsCodes from '../docs/examples/errors-codes.js';
import * as errorsRouting from '../docs/examples/errors-routing.js';
import * as expressExample from '../docs/examples/express.js';
import * as koaExample from '../docs/examples/koa.js';
import * as nodeHttp from '../docs/examples/node-http.js';
import * as observabilityChannels from '../docs/examples/observability-channels.js';
import * as observabilityHealth from '../docs/examples/observability-health.js';
import * as observabilityOtel from '../docs/examples/observability-otel.js';
import * as observabilityPino from '../docs/examples/observability-pino.js';
import * as rulesAbort from '../docs/examples/rules-abort.js';
import * as rulesNames from '../docs/examples/rules-names.js';
import * as rulesNested from '../docs/examples/rules-nested.js';
import * as rulesOrder from '../docs/examples/rules-order.js';
import * as rulesRunWhen from '../docs/examples/rules-runwhen.js';
import * as rulesStatus from '../docs/examples/rules-status.js';
import * as script from '../docs/examples/script.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DOCS = join(ROOT, 'docs');

/** The pages this suite owns (the others are checked by their owners' tests). */
const OWNED = [
  'README.md',
  'getting-started.md',
  'concepts.md',
  'rules.md',
  'api.md',
  'errors.md',
  'observability.md',
  'comparison.md',
  'decisions.md',
];
/** Pages other parts of the project write; links to them are allowed before they exist. */
const ELSEWHERE = new Set(['testing.md', 'queues.md', 'reliability.md', 'benchmarks.md']);

const ENTRIES: Record<string, { file: string; module: Record<string, unknown> }> = {
  'request-defer': { file: 'src/index.ts', module: root },
  'request-defer/express': { file: 'src/express.ts', module: expressEntry },
  'request-defer/koa': { file: 'src/koa.ts', module: koaEntry },
  'request-defer/node': { file: 'src/node.ts', module: nodeEntry },
  'request-defer/testing': { file: 'src/testing.ts', module: testingEntry },
  'request-defer/bullmq': { file: 'src/bullmq.ts', module: bullmqEntry },
};

/** `from '../../src/express.js'` → `from 'request-defer/express'`, as a user writes it. */
function asPublished(source: string): string {
  return source.replace(/from '\.\.\/\.\.\/src\/(\w+)\.js'/g, (_, entry: string) =>
    entry === 'index' ? "from 'request-defer'" : `from 'request-defer/${entry}'`,
  );
}

interface Block {
  page: string;
  line: number;
  lang: string;
  code: string;
  marker: string | undefined;
}

function blocks(page: string): Block[] {
  const lines = readFileSync(join(DOCS, page), 'utf8').split('\n');
  const found: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w*)$/.exec(lines[i]!);
    if (open === null) continue;
    let end = i + 1;
    while (end < lines.length && lines[end] !== '```') end++;
    const previous = i > 0 ? lines[i - 1]! : '';
    found.push({
      page,
      line: i + 1,
      lang: open[1]!,
      code: lines.slice(i + 1, end).join('\n'),
      marker: /^<!-- (example|signature): ?(.*) -->$/.test(previous) ? previous : undefined,
    });
    i = end;
  }
  return found;
}

const ALL_BLOCKS = OWNED.flatMap(blocks);
const EXAMPLE_FILES = readdirSync(join(DOCS, 'examples')).filter((f) => f.endsWith('.ts'));

/** The names a signature block declares. */
function declared(code: string): string[] {
  const names = [...code.matchAll(/\b(?:function|class|const|interface|type)\s+(\w+)/g)].map((m) => m[1]!);
  for (const m of code.matchAll(/export type \{([^}]*)\}/g)) names.push(...m[1]!.split(',').map((s) => s.trim()));
  return names.filter((n) => n.length > 0);
}

/** The type names an entry file exports. */
function exportedTypes(file: string): string[] {
  const source = readFileSync(join(ROOT, file), 'utf8');
  const names = [...source.matchAll(/^export (?:interface|type) (\w+)/gm)].map((m) => m[1]!);
  for (const m of source.matchAll(/^export type \{([^}]*)\}/gm)) {
    names.push(...m[1]!.split(',').map((s) => s.trim().split(/\s+as\s+/).pop()!));
  }
  return names.filter((n) => n.length > 0);
}

describe('docs stay in sync with their examples', () => {
  it('every ts/js block is a marked example or a marked signature', () => {
    const unmarked = ALL_BLOCKS.filter((b) => /^(ts|js|typescript|javascript|tsx)$/.test(b.lang) && b.marker === undefined);
    expect(unmarked.map((b) => `${b.page}:${b.line}`)).toEqual([]);
  });

  it('every example block is its file, byte for byte, with the imports the package publishes', () => {
    const examples = ALL_BLOCKS.filter((b) => b.marker?.startsWith('<!-- example:'));
    expect(examples.length).toBeGreaterThanOrEqual(EXAMPLE_FILES.length);
    for (const block of examples) {
      const path = /<!-- example: (\S+) -->/.exec(block.marker!)![1]!;
      expect(path, `${block.page}:${block.line}`).toMatch(/^docs\/examples\/[\w-]+\.ts$/);
      const file = readFileSync(join(ROOT, path), 'utf8');
      expect(block.lang, `${block.page}:${block.line}`).toBe('ts');
      expect(block.code, `${block.page}:${block.line} differs from ${path}`).toBe(asPublished(file).replace(/\n$/, ''));
      expect(block.code, `${block.page}:${block.line}`).not.toContain('/src/');
    }
  });

  it('every example file is shown in the docs', () => {
    const shown = new Set(ALL_BLOCKS.flatMap((b) => (b.marker === undefined ? [] : [/example: docs\/examples\/(\S+)/.exec(b.marker)?.[1]])));
    expect(EXAMPLE_FILES.filter((f) => !shown.has(f))).toEqual([]);
  });

  it('every signature block names real exports of its entry point', () => {
    const signatures = ALL_BLOCKS.filter((b) => b.marker?.startsWith('<!-- signature:'));
    expect(signatures.length).toBeGreaterThan(10);
    for (const block of signatures) {
      const entry = /<!-- signature: (\S+) -->/.exec(block.marker!)![1]!;
      expect(ENTRIES, `${block.page}:${block.line}`).toHaveProperty([entry]);
      const { file, module } = ENTRIES[entry]!;
      const known = new Set([...Object.keys(module), ...exportedTypes(file), ...exportedTypes('src/types.ts')]);
      const unknown = declared(block.code).filter((name) => !known.has(name));
      expect(unknown, `${block.page}:${block.line} (${entry})`).toEqual([]);
    }
  });

  it('every export of every entry point is in docs/api.md', () => {
    const api = blocks('api.md').filter((b) => b.marker?.startsWith('<!-- signature:'));
    for (const [entry, { file, module }] of Object.entries(ENTRIES)) {
      const documented = new Set(
        api.filter((b) => b.marker!.includes(`signature: ${entry} `)).flatMap((b) => declared(b.code)),
      );
      const missing = [...Object.keys(module), ...exportedTypes(file)].filter((name) => !documented.has(name));
      expect(missing, `exports of ${entry} missing from docs/api.md`).toEqual([]);
    }
  });

  it('relative links point at pages and anchors that exist', () => {
    const slug = (heading: string) =>
      heading
        .trim()
        .toLowerCase()
        .replace(/[^\w\s-]/g, '')
        .replace(/\s/g, '-');
    const anchors = (page: string) =>
      new Set(
        readFileSync(join(DOCS, page), 'utf8')
          .split('\n')
          .filter((l) => /^#{1,6} /.test(l))
          .map((l) => slug(l.replace(/^#+ /, ''))),
      );
    const broken: string[] = [];
    for (const page of OWNED) {
      const text = readFileSync(join(DOCS, page), 'utf8').replace(/```[\s\S]*?```/g, '');
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target!)) continue; // https:, mailto:
        const [path, anchor] = target!.split('#') as [string, string | undefined];
        const file = path === '' ? page : path;
        if (ELSEWHERE.has(file)) continue;
        if (!existsSync(join(DOCS, file))) broken.push(`${page}: ${target}`);
        else if (anchor !== undefined && file.endsWith('.md') && !anchors(file).has(anchor)) broken.push(`${page}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('docs/errors.md lists every code of src/errors.ts', () => {
    const table = readFileSync(join(DOCS, 'errors.md'), 'utf8');
    const codes = [...readFileSync(join(ROOT, 'src/errors.ts'), 'utf8').matchAll(/^\s+(ERR_DEFER_\w+):/gm)].map((m) => m[1]!);
    expect(codes.length).toBeGreaterThanOrEqual(10);
    expect(codes.filter((code) => !table.includes(`| \`${code}\` |`))).toEqual([]);
  });
});

/** Runs `main` with faked setTimeout, advancing the clock until it settles. */
async function withFakeTimers<T>(main: () => Promise<T>): Promise<T> {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  try {
    let settled = false;
    const result = main().finally(() => (settled = true));
    for (let i = 0; !settled; i++) {
      if (i > 200) throw new Error('the example did not settle');
      await vi.advanceTimersByTimeAsync(250);
      await new Promise((resolve) => setImmediate(resolve));
    }
    return await result;
  } finally {
    vi.useRealTimers();
  }
}

afterEach(async () => {
  vi.useRealTimers();
  await drain();
});

describe('getting started examples', () => {
  it('Express: the welcome mail only after a 201, the audit always', async () => {
    expect(await expressExample.main()).toEqual({
      replies: ['201 {"id":1,"email":"ada@example.com"}', '422 {"error":"email is invalid"}'],
      sent: ['audit: signup attempt ada@example.com', 'welcome mail to ada@example.com', 'audit: signup attempt not-an-email'],
    });
  });

  it('Koa: the final status, read at close', async () => {
    expect(await koaExample.main()).toEqual({
      statuses: [200, 404],
      visits: ['visit /hello -> 200', 'greeted on /hello', 'visit /nope -> 404'],
    });
  });

  it('node:http', async () => {
    expect(await nodeHttp.main()).toEqual({ statuses: [200, 404], log: ['after /'] });
  });

  it('withDefer for scripts', async () => {
    expect(await script.main()).toEqual({ imported: 2, notified: ['admins: 2 users imported'] });
  });
});

describe('concepts and rules examples', () => {
  it('concepts: collection, terminate phase, outcome', async () => {
    expect(await concepts.main()).toEqual({
      collected: { size: 2, names: [expect.stringMatching(/^sendMail#\d+$/), 'audit'], ranSoFar: [] },
      ran: ['sendMail', 'audit'],
      outcome: { kind: 'scope', ok: true, aborted: false },
    });
  });

  it('status gating and always', async () => {
    expect(await rulesStatus.main()).toEqual({
      ran: ['200: plain', '200: always', '204: plain', '204: always', '302: plain', '302: always', '404: always', '422: always', '500: always'],
      skipped: ['plain-404 (status)', 'plain-422 (status)', 'plain-500 (status)'],
    });
  });

  it('a custom runWhen, called once per request', async () => {
    expect(await rulesRunWhen.main()).toEqual({
      recorded: ['search "ada"', 'search "ada" counted', 'search "nobody"', 'search "nobody" counted'],
      judged: [200, 404, 500],
    });
  });

  it('abort: only always callbacks, with the status sent', async () => {
    expect(await rulesAbort.main()).toEqual({
      outcome: { kind: 'http', statusCode: 200, ok: false, aborted: true },
      ran: ['release the subscription'],
    });
  });

  it('order and isolation, sequential and parallel', async () => {
    expect(await rulesOrder.main()).toEqual({
      sequential: { log: ['a start', 'a end', 'c start', 'c end'], errors: ['b failed'] },
      parallel: { log: ['a start', 'c start', 'a end', 'c end'], errors: ['b failed'] },
    });
  });

  it('names, replacement and forget', async () => {
    expect(await rulesNames.main()).toEqual({
      ran: ['send receipt', 'recompute cart v2'],
      outsideAScope: false,
      forgotten: { ping: expect.stringMatching(/^ping#\d+$/), byGeneratedName: true, unknown: false },
    });
  });

  it('nested and late defer', async () => {
    expect(await rulesNested.main()).toEqual([
      'first',
      'second',
      'nested in first',
      'first, again',
      'late, scope ok',
      'late always, scope failed',
    ]);
  });
});

describe('API examples', () => {
  it('defer() and DeferredCallback', async () => {
    expect(await apiDefer.main()).toEqual({
      codes: ['ERR_DEFER_NO_SCOPE', 'ERR_DEFER_INVALID_CALLBACK', 'ERR_DEFER_INVALID_OPTIONS'],
      registered: [
        { name: 'welcome-mail', isAlways: false, options: { name: 'welcome-mail', timeout: 10_000 } },
        { name: expect.stringMatching(/^audit#\d+$/), isAlways: true, options: {} },
      ],
      log: ['welcome-mail: welcome mail to ada@example.com (scope outcome)'],
    });
  });

  it('waitUntil()', async () => {
    expect(await apiWaitUntil.main()).toEqual({
      summary: { completed: 1, failed: 1, abandoned: 0 },
      reported: ['callback, name undefined: analytics down'],
    });
  });

  it('withDefer()', async () => {
    const result = await apiWithDefer.main();
    expect(result).toEqual({
      log: ['withDefer resolved with 42', 'deferred work done'],
      sameError: true,
      outcome: { kind: 'scope', ok: false, aborted: false, error: expect.any(Error) },
    });
    expect((result.outcome?.error as Error).message).toBe('import failed');
  });

  it('drain() with a deadline', async () => {
    expect(await withFakeTimers(apiDrain.main)).toEqual({
      summary: { completed: 1, failed: 0, abandoned: 1 },
      reported: ['abandoned: stuck'],
    });
  });

  it('currentCollection() and DeferredCallbackCollection', async () => {
    expect(await apiCollection.main()).toEqual({
      outside: undefined,
      inside: { isCollection: true, before: 2, removed: true, after: 1, waiting: ['audit (always)'] },
    });
  });

  it('configureDefer() and deferStats()', async () => {
    expect(await apiConfigure.main()).toEqual({ refused: ['ERR_DEFER_OVERFLOW: c (overflow)'], completed: 2, dropped: 1 });
    // The example restored the defaults: 17 parallel callbacks run 16 at a time, none refused.
    const before = deferStats().dropped;
    await withDefer(() => {
      for (let i = 0; i < 17; i++) defer(() => undefined);
    }, { mode: 'parallel', await: true });
    expect(deferStats().dropped).toBe(before);
  });

  it('request-defer/express', async () => {
    expect(await apiExpress.main()).toEqual({ body: { sameScope: true }, log: ['access log /users', 'refresh users cache'] });
  });

  it('request-defer/koa', async () => {
    expect(await apiKoa.main()).toEqual({ refused: 'ERR_DEFER_INVALID_OPTIONS', sent: 503, seenByCallback: [503] });
  });

  it('request-defer/node', async () => {
    const log = await apiNode.main();
    expect([...log].sort()).toEqual(['callback: webhook for /orders failed', 'handler returned handled']);
  });

  it('request-defer/testing', async () => {
    expect(await apiTesting.main()).toEqual({ onFailure: [], inline: ['grace@example.com'] });
  });

  it('request-defer/bullmq', async () => {
    expect(await apiBullmq.main()).toEqual({
      jobs: ['welcome-mail for user 1', 'audit for user 1', 'audit for user 2'],
      reported: [expect.stringMatching(/^ERR_DEFER_ENQUEUE \(welcome-mail#\d+\): connect ECONNREFUSED 127\.0\.0\.1:6379$/)],
    });
  });
});

describe('errors examples', () => {
  it('every code surfaces as documented', async () => {
    expect(await withFakeTimers(errorsCodes.main)).toEqual({
      ERR_DEFER_NO_SCOPE: 'thrown',
      ERR_DEFER_INVALID_CALLBACK: 'thrown',
      ERR_DEFER_INVALID_OPTIONS: 'thrown',
      ERR_DEFER_FAKE_ACTIVE: 'thrown',
      ERR_DEFER_FAKE_RESTORED: 'thrown',
      ERR_DEFER_TIMEOUT: 'reported, phase timeout',
      ERR_DEFER_OVERFLOW: 'reported, phase overflow',
      ERR_DEFER_ENQUEUE: 'reported, phase callback',
      ERR_DEFER_ABANDONED: 'reported, phase abandoned',
    });
  });

  it('routing: scope handler, process handler, the value unwrapped, info serializable', async () => {
    expect(await errorsRouting.main()).toEqual({
      toScope: [
        {
          error: 'a string, not an Error',
          info: { phase: 'callback', name: 'odd', outcome: { kind: 'scope', ok: true, aborted: false } },
        },
      ],
      toProcess: ['callback mail: Error: smtp down', 'callback undefined: Error: outside any scope'],
    });
  });
});

describe('observability examples (stand-in logger and tracer)', () => {
  it('scope and skip channels', async () => {
    expect(await observabilityChannels.main()).toEqual([
      'scope: scope ok=false, 2 waiting',
      'skip: publish (status)',
      'scope: scope ok=true, 1 waiting',
      'skip: nightly-report (runWhen)',
    ]);
  });

  it('pino: one line per settled callback, one per skip', async () => {
    const lines = await observabilityPino.main();
    expect(lines).toEqual([
      {
        level: 'info',
        message: 'deferred callback done',
        fields: { deferred: 'welcome-mail', generation: 0, status: undefined, durationMs: expect.any(Number) },
      },
      {
        level: 'error',
        message: 'deferred callback failed',
        fields: { deferred: 'webhook', generation: 0, status: undefined, durationMs: expect.any(Number), err: expect.any(Error) },
      },
      { level: 'warn', message: 'deferred callback skipped', fields: { deferred: 'receipt', reason: 'status' } },
    ]);
    expect((lines[1]!.fields.err as Error).message).toBe('webhook 502');
  });

  it('OpenTelemetry: one span per run, ended once, exceptions recorded', async () => {
    const attributes = (name: string, generation: number) => ({ 'defer.name': name, 'defer.generation': generation, 'defer.outcome': 'scope' });
    expect(await observabilityOtel.main()).toEqual([
      { name: 'defer welcome-mail', attributes: attributes('welcome-mail', 0), exceptions: [], status: undefined, ended: 1 },
      { name: 'defer receipt', attributes: attributes('receipt', 0), exceptions: ['Error: template missing'], status: 2, ended: 1 },
      { name: 'defer fan-out', attributes: attributes('fan-out', 0), exceptions: [], status: undefined, ended: 1 },
      { name: 'defer webhook', attributes: attributes('webhook', 1), exceptions: ['Error: 502'], status: 2, ended: 1 },
    ]);
  });

  it('deferStats() health endpoint', async () => {
    const counter = expect.any(Number);
    expect(await observabilityHealth.main()).toEqual({
      status: 200,
      body: { status: 'ok', defer: { queued: 0, running: 0, completed: counter, failed: counter, dropped: counter, abandoned: counter } },
    });
  });
});

describe('design decisions (docs/decisions.md)', () => {
  const code = (c: string) => expect.objectContaining({ code: c });

  it('1. withDefer() and drain() throw validation errors synchronously', () => {
    expect(() => withDefer('not a function' as never)).toThrow(code('ERR_DEFER_INVALID_CALLBACK'));
    expect(() => withDefer(() => 1, { timout: 5 } as never)).toThrow(code('ERR_DEFER_INVALID_OPTIONS'));
    expect(() => drain({ timeout: 0 })).toThrow(code('ERR_DEFER_INVALID_OPTIONS'));
    expect(() => drain({ deadline: 5 } as never)).toThrow(code('ERR_DEFER_INVALID_OPTIONS'));
  });

  it('2. deferDispatch() takes defer() options as its 5th argument', async () => {
    const added: unknown[] = [];
    const queue = { add: async (name: string, data: unknown, opts?: unknown) => void added.push([name, data, opts]) };
    const cb = await withDefer(
      () => bullmqEntry.deferDispatch(queue, 'job', { id: 1 }, { attempts: 2 }, { name: 'the-job', always: true, timeout: 50 }),
      { await: true },
    );
    expect({ name: cb.name, isAlways: cb.isAlways, timeout: cb.options.timeout }).toEqual({ name: 'the-job', isAlways: true, timeout: 50 });
    expect(added).toEqual([['job', { id: 1 }, { attempts: 2 }]]);
  });

  it('3. forget() throws for a non-string name inside a scope, returns false outside one', async () => {
    expect(forget(42 as never)).toBe(false);
    await withDefer(() => {
      expect(() => forget(42 as never)).toThrow(code('ERR_DEFER_INVALID_OPTIONS'));
      expect(() => root.currentCollection()!.forget(42 as never)).toThrow(code('ERR_DEFER_INVALID_OPTIONS'));
    });
  });

  it('4. runWhen passes only when it returns exactly true', async () => {
    const ran: string[] = [];
    await withDefer(() => void defer(() => void ran.push('truthy')), { runWhen: () => 1 as never, await: true });
    await withDefer(() => void defer(() => void ran.push('true')), { runWhen: () => true, await: true });
    expect(ran).toEqual(['true']);
  });

  it('5. DeferredCallback.options is what defer() was given, a frozen {} when nothing', async () => {
    await withDefer(() => {
      const given = { name: 'x', timeout: 5 };
      expect(defer(() => undefined, given).options).toEqual(given);
      const bare = defer(() => undefined).options;
      expect(bare).toEqual({});
      expect(Object.isFrozen(bare)).toBe(true);
    });
  });

  it('6. generated names are fnName#id or deferred#id, never shared', async () => {
    await withDefer(() => {
      const named = defer(function sendMail() {});
      const a = defer(() => undefined);
      const b = defer(() => undefined);
      expect(named.name).toMatch(/^sendMail#\d+$/);
      expect(a.name).toMatch(/^deferred#\d+$/);
      expect(b.name).toMatch(/^deferred#\d+$/);
      expect(a.name).not.toBe(b.name);
      expect(root.currentCollection()!.size).toBe(3); // unnamed callbacks never replace each other
    });
  });

  it('7. forget() accepts a generated name', async () => {
    const ran: string[] = [];
    await withDefer(
      () => {
        const cb = defer(() => void ran.push('forgotten'));
        defer(() => void ran.push('kept'));
        expect(forget(cb.name)).toBe(true);
        expect(forget(cb.name)).toBe(false);
      },
      { await: true },
    );
    expect(ran).toEqual(['kept']);
  });

  it('8. nested and late callbacks are judged after a chained .always(), in parallel mode too', async () => {
    const ran: string[] = [];
    let release!: () => void;
    const later = new Promise<void>((resolve) => (release = resolve));
    let late!: Promise<void>;
    await withDefer(
      () => {
        defer(() => {
          defer(() => void ran.push('nested always')).always();
          defer(() => void ran.push('nested plain'));
        }).always();
        late = later.then(() => {
          defer(() => void ran.push('late always')).always();
          defer(() => void ran.push('late plain'));
        });
        throw new Error('fn failed');
      },
      { mode: 'parallel', await: true },
    ).catch(() => undefined);
    release();
    await late;
    await drain();
    expect(ran).toEqual(['nested always', 'late always']);
  });

  it("9. a failed 'scope' outcome skips with reason 'status' under the default runWhen", async () => {
    const reasons: string[] = [];
    const onSkip = (m: unknown) => void reasons.push((m as { reason: string }).reason);
    dc.subscribe('request-defer:skip', onSkip);
    try {
      await withDefer(() => {
        defer(() => undefined);
        throw new Error('fn failed');
      }).catch(() => undefined);
      await withDefer(() => void defer(() => undefined), { runWhen: () => false });
    } finally {
      dc.unsubscribe('request-defer:skip', onSkip);
    }
    expect(reasons).toEqual(['status', 'runWhen']);
  });

  it('10. runWhen is evaluated lazily, once per scope', async () => {
    const judged: Outcome[] = [];
    const runWhen = (o: Outcome) => (judged.push(o), true);
    await withDefer(() => void defer(() => undefined).always(), { runWhen, await: true });
    expect(judged).toHaveLength(0); // only always callbacks: never asked
    await withDefer(
      () => {
        defer(() => void defer(() => undefined)); // a nested plain callback reuses the verdict
        defer(() => undefined);
        defer(() => undefined);
      },
      { runWhen, await: true },
    );
    expect(judged).toHaveLength(1);
  });

  it('11. an invocation yields after 1 000 callbacks, or once ~10 ms have passed', async () => {
    let yields = 0;
    const count = { setImmediate: <T>(fn: (arg: T) => void, arg: T) => (yields++, setImmediate(fn, arg)) };
    const restore = setTimers({ ...count, now: () => 1 }); // a clock that never moves: only the count yields
    try {
      await withDefer(() => {
        for (let i = 0; i < 2500; i++) defer(() => undefined);
      }, { await: true });
      expect(yields).toBe(2); // at 1 000 and 2 000
    } finally {
      restore();
    }
    yields = 0;
    let now = 0;
    const restoreClock = setTimers({ ...count, now: () => (now += 11) }); // every clock read: 11 ms later
    try {
      await withDefer(() => {
        for (let i = 0; i < 100; i++) defer(() => undefined);
      }, { await: true });
      // A slice's first callback reads no clock, its second starts the clock, its third finds 11 ms gone:
      // after the first slice, a yield every 2 callbacks.
      expect(yields).toBe(49);
    } finally {
      restoreClock();
    }
  });

  it('12. maxNestingDepth counts generations above 0', async () => {
    const reported: string[] = [];
    const ran: string[] = [];
    configureDefer({ maxNestingDepth: 1 });
    try {
      await withDefer(
        () =>
          void defer(() => {
            ran.push('generation 0');
            defer(() => {
              ran.push('generation 1');
              defer(() => void ran.push('generation 2'));
            });
          }),
        { await: true, onError: (error, info) => void reported.push(`${(error as { code: string }).code} ${info.phase}`) },
      );
    } finally {
      configureDefer({ maxNestingDepth: undefined });
    }
    expect(ran).toEqual(['generation 0', 'generation 1']);
    expect(reported).toEqual(['ERR_DEFER_OVERFLOW overflow']);
  });

  it('13. drain() inside a callback does not wait for itself', async () => {
    const summaries: unknown[] = [];
    await withDefer(
      () =>
        void defer(async () => {
          summaries.push(await drain());
          await withDefer(async () => void summaries.push(await drain()));
        }),
      { await: true },
    );
    expect(summaries).toEqual([
      { completed: 0, failed: 0, abandoned: 0 },
      { completed: 0, failed: 0, abandoned: 0 },
    ]);
  });

  it('14. the fake is process-wide, and restore() is idempotent', async () => {
    const fake = testingEntry.fakeDefer();
    try {
      // Outside any scope, in another async context: recorded all the same.
      await new Promise<void>((resolve) =>
        setImmediate(() => {
          defer(() => undefined, { name: 'from-a-timer' });
          resolve();
        }),
      );
      fake.assertDeferred('from-a-timer');
    } finally {
      fake.restore();
    }
    expect(() => fake.restore()).not.toThrow();
    expect(() => defer(() => undefined)).toThrow(code('ERR_DEFER_NO_SCOPE')); // normal scheduling is back
  });

  it('15. a copy with another state protocol refuses to load', async () => {
    const key = Symbol.for('request-defer');
    const shared = (globalThis as Record<symbol, { version: number }>)[key]!;
    Object.defineProperty(globalThis, key, { value: { ...shared, version: shared.version + 1 }, configurable: true });
    try {
      vi.resetModules();
      await expect(import('../src/core/state.js')).rejects.toMatchObject({ code: 'ERR_DEFER_INCOMPATIBLE_COPY' });
    } finally {
      Object.defineProperty(globalThis, key, { value: shared, configurable: true });
      vi.resetModules();
    }
  });

  it('16. an abort listener that throws is an uncaught exception; the library carries on', async () => {
    const saved = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    const uncaught: unknown[] = [];
    process.on('uncaughtException', (error) => void uncaught.push(error));
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const ran: string[] = [];
      const reported: string[] = [];
      const done = withDefer(
        () => {
          defer(
            ({ signal }) => {
              signal.addEventListener('abort', () => {
                throw new Error('listener failed');
              });
              return new Promise(() => {});
            },
            { timeout: 10 },
          );
          defer(() => void ran.push('next'));
        },
        { await: true, onError: (error) => void reported.push((error as { code: string }).code) },
      );
      await vi.advanceTimersByTimeAsync(10);
      await done;
      await new Promise((resolve) => setImmediate(resolve));
      expect(uncaught).toEqual([expect.objectContaining({ message: 'listener failed' })]);
      expect(reported).toEqual(['ERR_DEFER_TIMEOUT']);
      expect(ran).toEqual(['next']);
    } finally {
      vi.useRealTimers();
      process.removeAllListeners('uncaughtException');
      for (const listener of saved) process.on('uncaughtException', listener);
    }
  });

  it('18. a throwing runWhen is reported once, without a name', async () => {
    const reported: unknown[] = [];
    const boom = new Error('runWhen failed');
    await withDefer(
      () => {
        defer(() => undefined);
        defer(() => undefined);
      },
      {
        await: true,
        runWhen: () => {
          throw boom;
        },
        onError: (error, info) => void reported.push([error, info.phase, info.name]),
      },
    );
    expect(reported).toEqual([[boom, 'callback', undefined]]);
  });
});
