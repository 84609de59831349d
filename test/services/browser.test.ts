/**
 * The playground end to end, in a real headless Chromium (Debian's
 * `chromium`, driven by playwright-core): `playground/start.mjs` runs as a
 * child process on a free loopback port, the page is opened, the buttons are
 * clicked, and the timeline — drawn from request-defer's diagnostics_channel
 * events streamed over SSE — must show each deferred callback in the state
 * the rules give it:
 *
 * | button          | status  | welcome-mail     | audit (always) | analytics        |
 * |-----------------|---------|------------------|----------------|------------------|
 * | Sign up         | 201     | ran              | ran            | ran              |
 * | Invalid email   | 422     | skipped (status) | ran            | skipped (status) |
 * | Database down   | 500     | skipped (status) | ran            | skipped (status) |
 * | Client aborts   | aborted | skipped (abort)  | ran            | skipped (abort)  |
 * | Analytics fails | 201     | ran              | ran            | failed           |
 * | Analytics hangs | 201     | ran              | ran            | timed out        |
 *
 * Waiting is done with Playwright's locator waits on the page's data
 * attributes (a card is `data-settled="true"` once every callback of its
 * scope has a final state), never a sleep. The playground imports the built
 * package (dist/; start.mjs builds it when missing). Screenshots go to
 * test-artifacts/.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { requireChromium } from './chromium.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ARTIFACTS = `${ROOT}test-artifacts`;
const WAIT = { timeout: 20_000 };

// ---------------------------------------------------------------------------
// The playground as a child process

interface Playground {
  url: string;
  child: ChildProcess;
  /** Everything the child wrote to stdout so far. */
  output(): string;
}

const children: ChildProcess[] = [];

/** Starts `node playground/start.mjs --port 0 …args` and resolves once it prints its URL. */
function startPlayground(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Playground> {
  const child = spawn(process.execPath, ['playground/start.mjs', '--port', '0', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (chunk: string) => {
      stdout += chunk;
      const match = /running at (http:\/\/127\.0\.0\.1:\d+)/.exec(stdout);
      if (match !== null) resolve({ url: match[1]!, child, output: () => stdout });
    });
    child.stderr!.on('data', (chunk: string) => (stderr += chunk));
    child.once('exit', (code) => reject(new Error(`playground exited (${code}) before listening:\n${stdout}\n${stderr}`)));
  });
}

/** Stops a child with SIGTERM (the playground drains, then exits) and waits for it. */
function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });
}

/** Runs the CLI to completion and returns its exit code and output. */
function runToExit(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ['playground/start.mjs', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, output })));
}

/** A loopback port nothing listens on (bound, then released). */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------
// The browser

let browser: Browser;
let page: Page | undefined;
let pageErrors: string[] = [];

beforeAll(async () => {
  browser = await chromium.launch({
    executablePath: requireChromium(),
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  mkdirSync(ARTIFACTS, { recursive: true });
});

afterEach(async () => {
  await page?.context().close();
  page = undefined;
  while (children.length > 0) await stop(children.pop()!);
});

afterAll(async () => {
  await browser?.close();
});

async function openPage(url: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1120, height: 900 }, deviceScaleFactor: 1 });
  page = await context.newPage();
  pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  page.on('console', (message) => {
    // Chromium logs every 4xx/5xx response as a console error; those are the demo.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) pageErrors.push(message.text());
  });
  await page.goto(url);
  // The event stream is open and its replay applied.
  await page.locator('body[data-ready="true"]').waitFor(WAIT);
  return page;
}

/** Clicks a demo button and returns its request's card once every callback has a final state. */
async function click(p: Page, action: string): Promise<Locator> {
  const before = await p.locator(`article.request[data-demo="${action}"]`).count();
  await p.locator(`button[data-action="${action}"]`).click();
  const card = p.locator(`article.request[data-demo="${action}"]`).nth(0); // newest first
  await p.locator(`article.request[data-demo="${action}"]`).nth(before).waitFor(WAIT);
  await p.locator(`article.request[data-demo="${action}"][data-settled="true"]`).nth(before).waitFor(WAIT);
  return card;
}

/** The callback lanes of a card, in timeline order: `name=state`. */
async function lanes(card: Locator): Promise<string[]> {
  return card
    .locator('.lane[data-callback]')
    .evaluateAll((els) => els.map((el) => `${(el as HTMLElement).dataset.callback}=${(el as HTMLElement).dataset.state}`));
}

async function attributes(card: Locator): Promise<{ status: string | null; outcome: string | null; id: string | null }> {
  return {
    status: await card.getAttribute('data-status'),
    outcome: await card.getAttribute('data-outcome'),
    id: await card.getAttribute('data-request-id'),
  };
}

// ---------------------------------------------------------------------------

describe.each([
  { framework: 'Express 5', args: [], screenshot: 'playground.png' },
  { framework: 'Koa 3', args: ['--koa'], screenshot: 'playground-koa.png' },
])('playground on $framework in Chromium', ({ framework, args, screenshot }) => {
  it('shows which deferred callbacks ran, were skipped, failed or timed out, per request', async () => {
    const playground = await startPlayground(args);
    const p = await openPage(playground.url);
    await expect(p.locator('#server').textContent()).resolves.toBe(framework);
    await expect(p.locator('#empty').isVisible()).resolves.toBe(true);

    // 201: everything runs after the response, in registration order.
    const success = await click(p, 'success');
    expect(await attributes(success)).toMatchObject({ status: '201', outcome: 'ok' });
    expect(await lanes(success)).toEqual(['welcome-mail=ran', 'audit=ran', 'analytics=ran']);
    await expect(success.locator('.marker').getAttribute('data-kind')).resolves.toBe('sent');
    await expect(success.locator('.response-lane .note').textContent()).resolves.toMatch(/^201 sent after [\d.]+ m?s$/);
    // The mail callback saw the request id from the app's AsyncLocalStorage.
    const { id } = await attributes(success);
    expect(playground.output()).toContain(`[${id}] welcome mail sent to`);

    // 422 from a validation error three calls deep: only the `always` audit runs.
    const invalid = await click(p, 'invalid');
    expect(await attributes(invalid)).toMatchObject({ status: '422', outcome: 'failed' });
    expect(await lanes(invalid)).toEqual(['welcome-mail=skipped-status', 'audit=ran', 'analytics=skipped-status']);
    await expect(invalid.locator('[data-callback="welcome-mail"] .chip').textContent()).resolves.toBe('skipped · status 422');

    // 500 from a thrown error, through the framework's error handling.
    const crash = await click(p, 'crash');
    expect(await attributes(crash)).toMatchObject({ status: '500', outcome: 'failed' });
    expect(await lanes(crash)).toEqual(['welcome-mail=skipped-status', 'audit=ran', 'analytics=skipped-status']);

    // The client reads the first chunk of a slow stream, then aborts the fetch.
    const abort = await click(p, 'abort');
    expect(await attributes(abort)).toMatchObject({ status: '200', outcome: 'aborted' });
    expect(await lanes(abort)).toEqual(['welcome-mail=skipped-aborted', 'audit=ran', 'analytics=skipped-aborted']);
    await expect(abort.locator('.marker').getAttribute('data-kind')).resolves.toBe('aborted');
    await expect(abort.locator('.status').textContent()).resolves.toBe('aborted (200 sent)');

    // A failing callback is reported and stops nothing; a hanging one times out.
    const down = await click(p, 'analytics-down');
    expect(await lanes(down)).toEqual(['welcome-mail=ran', 'audit=ran', 'analytics=failed']);
    await expect(down.locator('.summary .err').textContent()).resolves.toContain('503');
    const hangs = await click(p, 'analytics-hangs');
    expect(await lanes(hangs)).toEqual(['welcome-mail=ran', 'audit=ran', 'analytics=timed-out']);
    await expect(hangs.locator('[data-callback="analytics"] .note').textContent()).resolves.toMatch(/^timed out · 8\d\d ms$/);

    // One card per click, newest first; a reload replays the same timeline.
    const order = await p.locator('article.request').evaluateAll((els) => els.map((el) => (el as HTMLElement).dataset.demo));
    expect(order).toEqual(['analytics-hangs', 'analytics-down', 'abort', 'crash', 'invalid', 'success']);
    await p.screenshot({ path: `${ARTIFACTS}/${screenshot}`, fullPage: true });

    await p.reload();
    await p.locator('body[data-ready="true"]').waitFor(WAIT);
    await p.locator('article.request[data-settled="true"]').nth(5).waitFor(WAIT);
    expect(await lanes(p.locator('article.request[data-demo="abort"]'))).toEqual([
      'welcome-mail=skipped-aborted',
      'audit=ran',
      'analytics=skipped-aborted',
    ]);
    expect(pageErrors).toEqual([]);

    // SIGTERM: the playground closes the server and drains deferred work.
    expect(await stop(playground.child)).toBe(0);
    expect(playground.output()).toMatch(/stopped; drain\(\): \{"completed":\d+,"failed":0,"abandoned":0\}/);
  });
});

describe('playground --queue (welcome mail through BullMQ on Redis)', () => {
  it('enqueues the mail only after a successful response, and a Worker sends it', async () => {
    const playground = await startPlayground(['--queue'], { REDIS_URL: `redis://127.0.0.1:${inject('redisPort')}` });
    const p = await openPage(playground.url);
    await expect(p.locator('#server').textContent()).resolves.toBe('Express 5 · mail via BullMQ');

    const success = await click(p, 'success');
    expect(await lanes(success)).toEqual(['welcome-mail=ran', 'audit=ran', 'analytics=ran']);
    // The deferred callback is the enqueue (generated name welcome-mail#N); the job lane is the Worker.
    await expect(success.locator('[data-callback="welcome-mail"] .name small').textContent()).resolves.toMatch(/^#\d+$/);
    await success.locator('.lane[data-job="welcome-mail"][data-state="completed"]').waitFor(WAIT);

    const invalid = await click(p, 'invalid');
    expect(await lanes(invalid)).toEqual(['welcome-mail=skipped-status', 'audit=ran', 'analytics=skipped-status']);
    await expect(invalid.locator('.lane[data-job]').count()).resolves.toBe(0);
    expect(pageErrors).toEqual([]);
    await p.screenshot({ path: `${ARTIFACTS}/playground-queue.png`, fullPage: true });
  });

  it('exits non-zero and says how to start Redis when Redis does not answer', async () => {
    const port = await closedPort();
    const { code, output } = await runToExit(['--queue', '--port', '0'], { REDIS_URL: `redis://127.0.0.1:${port}` });
    expect(code).toBe(1);
    expect(output).toContain('Redis did not answer');
    expect(output).toContain('redis-server --port 6379');
  });
});
