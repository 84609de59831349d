// The service layer: routes -> signUp() -> userRepo / notifications /
// auditLog / analytics. None of them sees `req` or `res`: a bare defer()
// finds the request's scope through AsyncLocalStorage.
//
// The side effects are deferred *before* the save, so the demo can show what
// happens when the save fails: the response is 422 or 500 and request-defer
// skips the mail and the analytics ping (no welcome mail for an account that
// was never created), while the `always` audit entry records the attempt.
import * as analytics from './analytics.mjs';
import * as auditLog from './audit-log.mjs';
import * as notifications from './notifications.mjs';
import * as userRepo from './user-repo.mjs';

/**
 * @param {{ name?: string, email?: string }} input
 * @param {{ database?: 'down', analytics?: 'down' | 'hangs' }} simulate
 */
export async function signUp(input, simulate = {}) {
  const user = userRepo.build(input);
  notifications.sendWelcomeMail(user);
  auditLog.record('user.signup', { email: user.email });
  analytics.track('signup', { userId: user.id }, simulate.analytics);
  await userRepo.save(user, simulate);
  return user;
}
