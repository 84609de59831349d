import { currentCollection, defer, withDefer, type Outcome } from '../../src/index.js';

export async function main() {
  const ran: string[] = [];
  let seen: Outcome | undefined;
  const collected = await withDefer(
    () => {
      // Collection: registered in this scope, nothing runs yet.
      defer(function sendMail() {
        ran.push('sendMail');
      });
      defer(
        ({ outcome, name }) => {
          seen = outcome; // the scope's outcome, decided when fn settled
          ran.push(name);
        },
        { name: 'audit', always: true },
      );
      const collection = currentCollection()!; // this scope's DeferredCallbackCollection
      return { size: collection.size, names: [...collection].map((cb) => cb.name), ranSoFar: [...ran] };
    },
    { await: true }, // terminate phase: fn resolved, so the outcome is ok and both run, in order
  );
  return { collected, ran, outcome: seen };
}
