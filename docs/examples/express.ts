import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import { defer, drain } from '../../src/index.js';
import { deferMiddleware } from '../../src/express.js';

// Stand-ins for a mailer and an audit log.
const sent: string[] = [];
const mailer = { sendWelcome: async (email: string) => void sent.push(`welcome mail to ${email}`) };
const auditLog = { write: async (entry: string) => void sent.push(`audit: ${entry}`) };

// A service far from the router: no req or res in hand, defer() finds the request's scope.
export async function signUp(email: string): Promise<{ id: number; email: string }> {
  defer(() => auditLog.write(`signup attempt ${email}`)).always(); // runs whatever the response
  if (!email.includes('@')) throw Object.assign(new Error('email is invalid'), { status: 422 });
  const user = { id: 1, email };
  defer(() => mailer.sendWelcome(user.email), { name: 'welcome-mail' }); // runs only if the status is < 400
  return user;
}

export function createApp(): express.Express {
  const app = express();
  app.use(express.json());
  app.use(deferMiddleware()); // before the routes
  app.post('/signup', async (req, res) => {
    const user = await signUp(String(req.body.email));
    res.status(201).json(user);
  });
  app.use((error: Error & { status?: number }, _req: Request, res: Response, _next: NextFunction) => {
    res.status(error.status ?? 500).json({ error: error.message });
  });
  return app;
}

// Start on a free port, sign up twice, wait for the deferred work, stop.
export async function main() {
  const server = createApp().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/signup`;
  const post = async (email: string) => {
    const headers = { 'content-type': 'application/json' };
    const response = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ email }) });
    await drain(); // the request's deferred work has run
    return `${response.status} ${await response.text()}`;
  };
  const replies = [await post('ada@example.com'), await post('not-an-email')];
  server.close();
  return { replies, sent };
}
