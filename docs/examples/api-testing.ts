import { defer, drain } from '../../src/index.js';
import { fakeDefer, withoutDefer } from '../../src/testing.js';

// The code under test: a service that defers a mail, and an audit entry that always runs.
const mailed: string[] = [];
async function signUp(email: string): Promise<void> {
  defer(async () => void mailed.push(email), { name: 'welcome-mail' });
  defer(() => undefined, { name: 'audit', always: true });
}

export async function main() {
  // fakeDefer(): defer() records (no scope needed); run them under the outcome you choose.
  const fake = fakeDefer();
  let onFailure: string[];
  try {
    await signUp('ada@example.com');
    fake.assertDeferred('welcome-mail');
    fake.assertCount(2);
    await fake.runAll({ kind: 'http', statusCode: 500, ok: false, aborted: false }); // only 'audit' runs
    onFailure = [...mailed];
  } finally {
    fake.restore();
  }

  // withoutDefer(): defer() runs the callback at once, inside the call.
  const restore = withoutDefer();
  try {
    await signUp('grace@example.com');
    await drain(); // the async mail callback has settled
  } finally {
    restore();
  }
  return { onFailure, inline: [...mailed] };
}
