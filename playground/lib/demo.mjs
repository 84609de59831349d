// The demo routes, shared by the Express and the Koa app.
import { sleep } from './http.mjs';

/** POST routes that run signUp() and answer 201 (or the error's status). */
export const signupRoutes = {
  '/api/signup': {},
  '/api/signup/crash': { database: 'down' },
  '/api/signup/analytics-down': { analytics: 'down' },
  '/api/signup/analytics-hangs': { analytics: 'hangs' },
};

/** POST: signs up, then streams a slow "provisioning" log (the abort demo). */
export const slowRoute = '/api/signup/slow';

const STEPS = ['creating workspace', 'copying templates', 'indexing', 'warming caches', 'sending invites', 'done'];

/** The slow response body: one line every 400 ms, while the client listens. */
export async function* provisioning(user, isClosed) {
  yield `provisioning workspace for user ${user.id}\n`;
  for (const step of STEPS) {
    await sleep(400);
    if (isClosed()) return;
    yield `${step}\n`;
  }
}

/** The JSON body of an error response. */
export function errorBody(error) {
  const status = error?.status ?? 500;
  return status < 500 && error?.expose
    ? { error: error.message, field: error.field }
    : { error: 'Internal Server Error' };
}
