// Package checks on the built package, as a user installs it:
//  1. publint and @arethetypeswrong/cli (ESM, CJS and types resolve for every subpath);
//  2. `npm pack`, install the tarball into a fresh project, and run there:
//     - every subpath imported from ESM and required from CJS,
//     - one shared state when the ESM and the CJS copies are both loaded,
//     - the README's examples (fenced blocks tagged `file=...`), ESM and CJS.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args, cwd = root) => {
  console.log(`$ ${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { cwd, stdio: 'inherit', env: { ...process.env, npm_config_fund: 'false', npm_config_audit: 'false' } });
};

run('npx', ['publint', '--strict']);
run('npx', ['@arethetypeswrong/cli', '--pack']);

const work = mkdtempSync(join(tmpdir(), 'request-defer-pack-'));
try {
  const tarball = execFileSync('npm', ['pack', '--silent', '--pack-destination', work], { cwd: root, encoding: 'utf8' }).trim().split('\n').pop();
  const project = join(work, 'app');
  mkdirSync(project);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }, null, 2));
  const devDeps = ['express@^5', 'koa@^3', 'vitest@4.1.12'];
  run('npm', ['install', '--no-save', '--silent', join(work, tarball), ...devDeps], project);

  const subpaths = ['request-defer', 'request-defer/express', 'request-defer/koa', 'request-defer/node', 'request-defer/testing', 'request-defer/bullmq'];
  writeFileSync(
    join(project, 'dual.mjs'),
    `import { createRequire } from 'node:module';
import assert from 'node:assert/strict';
const require = createRequire(import.meta.url);
${subpaths.map((p, i) => `const esm${i} = await import('${p}');\nconst cjs${i} = require('${p}');`).join('\n')}
const esm = esm0, cjs = cjs0;
assert.equal(typeof esm.defer, 'function');
assert.equal(typeof cjs.defer, 'function');
assert.notEqual(esm.defer, cjs.defer, 'two copies are loaded');
// A scope opened by the CJS copy is seen by the ESM copy's defer().
const ran = [];
await cjs.withDefer(() => { esm.defer(() => ran.push('esm')); assert.equal(esm.currentCollection().size, 1); }, { await: true });
assert.deepEqual(ran, ['esm']);
// Errors and classes are recognised across copies.
try { cjs.defer('nope'); assert.fail('should throw'); } catch (error) {
  assert.ok(error instanceof esm.DeferError);
  assert.equal(error.code, 'ERR_DEFER_INVALID_CALLBACK');
}
await esm.withDefer(() => { const cb = cjs.defer(() => {}); assert.ok(cb instanceof esm.DeferredCallback); assert.ok(esm.currentCollection() instanceof cjs.DeferredCallbackCollection); });
// One fake for both copies.
const fake = esm4.fakeDefer();
cjs.defer(() => {}, { name: 'from-cjs' });
fake.assertDeferred('from-cjs');
assert.throws(() => cjs4.fakeDefer(), (e) => e.code === 'ERR_DEFER_FAKE_ACTIVE');
fake.restore();
// One drain for both copies.
let late = false;
await cjs.withDefer(() => { esm.defer(async () => { await new Promise((r) => setTimeout(r, 5)); late = true; }); });
await esm.drain();
assert.ok(late);
assert.equal(typeof esm1.deferMiddleware, 'function');
assert.equal(typeof cjs2.deferMiddleware, 'function');
assert.equal(typeof esm3.withDeferHandler, 'function');
assert.equal(typeof cjs5.deferDispatch, 'function');
console.log('dual-load: ok');
`,
  );
  run('node', ['dual.mjs'], project);

  // Importing the root entry must not load any framework.
  writeFileSync(
    join(project, 'no-frameworks.cjs'),
    `require('request-defer');
const loaded = Object.keys(require.cache).filter((p) => /node_modules[\\\\/](express|koa|bullmq)[\\\\/]/.test(p));
if (loaded.length) { console.error('root entry loaded', loaded); process.exit(1); }
console.log('root entry loads no framework: ok');
`,
  );
  run('node', ['no-frameworks.cjs'], project);

  // The published types, compiled as a strict user's project does (`tsc --init` turns on
  // exactOptionalPropertyTypes): explicit undefined restores a default, typos are refused.
  writeFileSync(
    join(project, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        exactOptionalPropertyTypes: true,
        noUncheckedIndexedAccess: true,
        module: 'nodenext',
        target: 'es2022',
        noEmit: true,
        skipLibCheck: false,
        typeRoots: [join(root, 'node_modules/@types')],
        types: ['node'],
      },
      files: ['strict.mts', 'strict.cts'],
    }),
  );
  const strictSource = (imports) => `${imports}
configureDefer({ concurrency: undefined, maxQueued: undefined, maxNestingDepth: undefined, onError: undefined });
await withDefer(() => { defer(() => undefined, { name: undefined, always: undefined, timeout: undefined }); }, { mode: undefined, onError: undefined, await: undefined });
await drain({ timeout: undefined });
const mw: unknown[] = [express({ timeout: undefined }), koa({ runWhen: undefined }), withDeferHandler(() => undefined, { mode: undefined })];
// @ts-expect-error: a typo is refused
configureDefer({ concurency: 4 });
export { mw };
`;
  writeFileSync(
    join(project, 'strict.mts'),
    strictSource(`import { configureDefer, defer, drain, withDefer } from 'request-defer';
import { deferMiddleware as express } from 'request-defer/express';
import { deferMiddleware as koa } from 'request-defer/koa';
import { withDeferHandler } from 'request-defer/node';`),
  );
  writeFileSync(
    join(project, 'strict.cts'),
    `import { configureDefer, defer, drain, withDefer } from 'request-defer';
import { deferMiddleware as express } from 'request-defer/express';
import { deferMiddleware as koa } from 'request-defer/koa';
import { withDeferHandler } from 'request-defer/node';
export async function main(): Promise<unknown[]> {
${strictSource('')
  .replace(/^export \{ mw \};\n/m, '')
  .trim()
  .split('\n')
  .map((line) => `  ${line}`)
  .join('\n')}
  return mw;
}
`,
  );
  run('node', [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], project);
  console.log('published types compile under strict + exactOptionalPropertyTypes, ESM and CJS: ok');

  // README examples tagged ```js file=NAME run as they are.
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```(?:js|ts)\s+file=(\S+)\n([\s\S]*?)```/g)];
  for (const [, file, code] of blocks) {
    writeFileSync(join(project, file), code);
  }
  for (const [, file] of blocks) {
    if (/\.test\.m?js$/.test(file)) {
      run('npx', ['vitest', 'run', file], project);
      run('node', ['--test', file], project);
    } else {
      run('node', [file], project);
    }
  }
  console.log(`package checks passed (${blocks.length} README examples run)`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
