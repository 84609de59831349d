// Mail. The welcome mail is deferred: the user gets the 201 without waiting
// ~300 ms for the mail provider, and gets no mail at all if the request fails.
import { defer } from 'request-defer';
import { deferDispatch } from 'request-defer/bullmq';
import { sleep } from '../lib/http.mjs';
import { currentRequestId } from '../lib/timeline.mjs';

let mailQueue; // set by --queue: the mail is handed to a BullMQ queue instead

export function useMailQueue(queue) {
  mailQueue = queue;
}

export function sendWelcomeMail(user) {
  const mail = { to: user.email, subject: `Welcome, ${user.name}!`, requestId: currentRequestId() };
  if (mailQueue !== undefined) {
    // Enqueued only after a successful response; a Worker sends it.
    return deferDispatch(mailQueue, 'welcome-mail', mail);
  }
  return defer(({ signal }) => deliver(mail, signal), { name: 'welcome-mail', timeout: 5_000 });
}

/** The simulated mail provider: ~300 ms per mail. */
export async function deliver(mail, signal) {
  await sleep(300, signal);
  // Deferred callbacks run in the async context of their defer() call, so
  // the request id from our AsyncLocalStorage is still here.
  console.log(`[${currentRequestId() ?? mail.requestId}] welcome mail sent to ${mail.to}`);
}
