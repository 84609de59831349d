import { request as httpRequest } from 'node:http';

export interface Reply {
  status: number;
  body: string;
}

/** A GET on 127.0.0.1 that resolves with the whole response. */
export function get(port: number, path: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * A GET whose client goes away: before any response (once `ready` resolves,
 * i.e. the handler is running) or right after the headers arrive.
 */
export function abortedGet(port: number, path: string, when: { ready: Promise<unknown> } | 'after-headers'): Promise<void> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      if (when === 'after-headers') {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      }
    });
    req.on('error', () => resolve());
    req.on('close', () => resolve());
    req.end();
    if (when !== 'after-headers') {
      void when.ready.then(() => req.destroy());
    }
  });
}

/** A promise with its resolve function, for gates and signals. */
export function gate<T = void>(): { promise: Promise<T>; open: (value: T) => void } {
  let open!: (value: T) => void;
  const promise = new Promise<T>((resolve) => (open = resolve));
  return { promise, open };
}
