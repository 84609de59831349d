// Small framework-neutral helpers: static files and a JSON body reader
// (the playground adds no dependency beyond Express, Koa and BullMQ).

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const publicDir = new URL('../public/', import.meta.url);

const files = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/style.css': ['style.css', 'text/css; charset=utf-8'],
};

/** Serves the page's three files; returns false for any other path. */
export async function serveStatic(req, res) {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const entry = files[new URL(req.url, 'http://localhost').pathname];
  if (entry === undefined) return false;
  const body = await readFile(fileURLToPath(new URL(entry[0], publicDir)));
  res.writeHead(200, { 'content-type': entry[1], 'content-length': body.length, 'cache-control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : body);
  return true;
}

/** Reads a small JSON request body (Koa has no body parser built in). */
export async function readJson(req, limit = 16_384) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw Object.assign(new Error('request body too large'), { status: 413, expose: true });
    chunks.push(chunk);
  }
  if (size === 0) return {};
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw Object.assign(new Error('request body is not valid JSON'), { status: 400, expose: true });
  }
}

export const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
