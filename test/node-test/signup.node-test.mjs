// A service that defers a welcome mail, which production sends only after a
// successful response, and its tests under node:test with the fake.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { defer } from '../../dist/index.js';
import { fakeDefer } from '../../dist/testing.js';

// --- the service (signup.js)
export const mailer = {
  sent: [],
  async send(to) {
    this.sent.push(to);
  },
};

export async function signUp(email) {
  if (!email.includes('@')) throw new Error(`invalid email: ${email}`);
  const user = { email };
  defer(() => mailer.send(user.email), { name: 'welcome-mail' });
  return user;
}

// --- its tests (signup.test.js)
describe('signUp', () => {
  let deferred;
  beforeEach(() => {
    deferred = fakeDefer();
    mailer.sent = [];
  });
  afterEach(() => deferred.restore());

  it('defers the welcome mail; it is sent once the response succeeded', async () => {
    await signUp('ada@example.com');
    deferred.assertDeferred('welcome-mail');
    assert.deepEqual(mailer.sent, []); // nothing is sent before the response
    await deferred.runAll({ statusCode: 201 });
    assert.deepEqual(mailer.sent, ['ada@example.com']);
  });

  it('sends no mail when the request fails', async () => {
    await signUp('ada@example.com');
    await deferred.runAll({ statusCode: 500 }); // skipped, as in production
    assert.deepEqual(mailer.sent, []);
  });

  it('defers nothing for an invalid address', async () => {
    await assert.rejects(signUp('ada'), /invalid email/);
    deferred.assertNotDeferred('welcome-mail');
    deferred.assertCount(0);
  });
});
