// The playground on Express 5.
import express from 'express';
import { deferStats } from 'request-defer';
import { deferMiddleware } from 'request-defer/express';
import { errorBody, provisioning, signupRoutes, slowRoute } from '../lib/demo.mjs';
import { serveStatic } from '../lib/http.mjs';
import { handleEvents, trackRequest } from '../lib/timeline.mjs';
import { signUp } from '../services/signup-service.mjs';

export function createExpressApp() {
  const app = express();
  app.disable('x-powered-by');

  // The page, its event stream and a health endpoint: outside any defer scope.
  app.get('/events', handleEvents);
  app.get('/stats', (req, res) => res.json(deferStats()));
  app.use(async (req, res, next) => {
    if (!(await serveStatic(req, res))) next();
  });

  // The API: timeline tracking first, then request-defer, then the routes.
  app.use('/api', (req, res, next) => trackRequest(req, res, { path: req.originalUrl, label: req.get('x-demo') }, next));
  app.use('/api', deferMiddleware());
  app.use(express.json());

  for (const [path, simulate] of Object.entries(signupRoutes)) {
    app.post(path, async (req, res) => {
      const user = await signUp(req.body ?? {}, simulate);
      res.status(201).json({ user });
    });
  }

  app.post(slowRoute, async (req, res) => {
    const user = await signUp(req.body ?? {});
    res.status(200).type('text/plain');
    for await (const line of provisioning(user, () => res.destroyed)) res.write(line);
    if (!res.destroyed) res.end();
  });

  // Express 5 hands thrown errors and rejected promises to this handler;
  // request-defer sees the status it finally sends (422 or 500).
  app.use((error, req, res, _next) => {
    if ((error.status ?? 500) >= 500) console.error(`[${res.getHeader('x-request-id')}] ${error.message}`);
    res.status(error.status ?? 500).json(errorBody(error));
  });
  return app;
}
