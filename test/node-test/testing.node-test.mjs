// request-defer/testing under node:test, against the built package (run
// `npm run build` first): the assertions are node:assert AssertionErrors
// that node:test reports with their message, and the fake is shared by the
// ESM and CJS copies of the package.
import assert, { AssertionError } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { defer, drain, withDefer } from '../../dist/index.js';
import { fakeDefer, withoutDefer } from '../../dist/testing.js';

const require = createRequire(import.meta.url);
const cjs = require('../../dist/index.cjs');
const cjsTesting = require('../../dist/testing.cjs');

const cleanups = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

function fake() {
  const f = fakeDefer();
  cleanups.push(() => f.restore());
  return f;
}

function deferAuditAndTwoAnonymous(deferFn) {
  deferFn(() => {}, { name: 'audit-login' }).always();
  deferFn(() => {});
  deferFn(() => {});
}

describe('assertion failures are AssertionErrors node:test can report', () => {
  it('assertDeferred(name) lists what was deferred', () => {
    const f = fake();
    deferAuditAndTwoAnonymous(defer);
    assert.throws(() => f.assertDeferred('send-welcome-mail'), {
      name: 'AssertionError',
      code: 'ERR_ASSERTION',
      message: 'Expected a deferred callback named "send-welcome-mail"; deferred were: "audit-login" (always), <anonymous> ×2',
    });
    assert.throws(() => f.assertDeferred('send-welcome-mail'), AssertionError);
  });

  it('assertNotDeferred, assertCount and run(unknown name) have their messages', async () => {
    const f = fake();
    deferAuditAndTwoAnonymous(defer);
    assert.throws(() => f.assertNotDeferred('audit-login'), {
      code: 'ERR_ASSERTION',
      message: 'Expected no deferred callback named "audit-login"; deferred were: "audit-login" (always), <anonymous> ×2',
    });
    assert.throws(() => f.assertCount(1), {
      code: 'ERR_ASSERTION',
      actual: 3,
      expected: 1,
      message: 'Expected 1 deferred callback; 3 were deferred: "audit-login" (always), <anonymous> ×2',
    });
    await assert.rejects(f.run('mail'), {
      name: 'AssertionError',
      message: 'fakeDefer().run("mail"): no deferred callback named "mail" is recorded; deferred were: "audit-login" (always), <anonymous> ×2',
    });
  });

  it('a failing assertion is reported by the node:test runner with its message', () => {
    const dir = mkdtempSync(join(tmpdir(), 'request-defer-node-test-'));
    try {
      const dist = (file) => JSON.stringify(pathToFileURL(fileURLToPath(new URL(`../../dist/${file}`, import.meta.url))).href);
      const file = join(dir, 'failing.test.mjs');
      writeFileSync(
        file,
        [
          `import { it } from 'node:test';`,
          `import { defer } from ${dist('index.js')};`,
          `import { fakeDefer } from ${dist('testing.js')};`,
          `it('expects a welcome mail', () => {`,
          `  const fake = fakeDefer();`,
          `  try {`,
          `    defer(() => {}, { name: 'audit-login', always: true });`,
          `    fake.assertDeferred('send-welcome-mail');`,
          `  } finally {`,
          `    fake.restore();`,
          `  }`,
          `});`,
          '',
        ].join('\n'),
      );
      const env = { ...process.env };
      delete env.NODE_TEST_CONTEXT; // run as a top-level runner, not as our child
      const child = spawnSync(process.execPath, ['--test', '--test-reporter=spec', file], { encoding: 'utf8', env, timeout: 60_000 });
      assert.equal(child.status, 1, child.stdout + child.stderr);
      assert.match(child.stdout, /✖ expects a welcome mail/);
      assert.match(child.stdout, /code: 'ERR_ASSERTION'/);
      assert.ok(
        child.stdout.includes('Expected a deferred callback named "send-welcome-mail"; deferred were: "audit-login" (always)'),
        child.stdout,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('one fake for every copy of the package', () => {
  it('defer() of the CJS build records into a fake installed through the ESM build', () => {
    const f = fake();
    const cb = cjs.defer(() => {}, { name: 'from-cjs' });
    defer(() => {}, { name: 'from-esm' });
    assert.deepEqual(f.callbacks.map((c) => c.name), ['from-cjs', 'from-esm']);
    assert.equal(f.callbacks[0], cb);
    assert.equal(cjs.forget('from-cjs'), true);
    f.assertCount(1);
  });

  it('a second fake through the other copy is refused with ERR_DEFER_FAKE_ACTIVE', () => {
    fake();
    assert.throws(() => cjsTesting.fakeDefer(), { code: 'ERR_DEFER_FAKE_ACTIVE' });
  });

  it('run() of the fake runs callbacks recorded by both copies, nested ones after', async () => {
    const f = fake();
    const order = [];
    cjs.defer(() => {
      order.push('cjs');
      defer(() => void order.push('nested esm'));
    });
    defer(() => void order.push('esm'));
    await f.run();
    assert.deepEqual(order, ['cjs', 'esm', 'nested esm']);
  });

  it('after restore() both copies schedule normally again', async () => {
    fakeDefer().restore();
    assert.throws(() => cjs.defer(() => {}), { code: 'ERR_DEFER_NO_SCOPE' });
    let ran = 0;
    await withDefer(() => void cjs.defer(() => void ran++), { await: true });
    assert.equal(ran, 1);
  });
});

describe('withoutDefer() from the built package', () => {
  it('runs the callback inside defer() of either copy, and drain() waits for its promise', async () => {
    const restore = withoutDefer();
    cleanups.push(restore);
    const seen = [];
    cjs.defer(async ({ outcome }) => {
      await null;
      seen.push(outcome);
    });
    assert.deepEqual(seen, []);
    assert.deepEqual(await drain(), { completed: 1, failed: 0, abandoned: 0 });
    assert.deepEqual(seen, [{ kind: 'scope', ok: true, aborted: false }]);
  });
});
