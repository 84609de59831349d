import { currentCollection, defer, DeferredCallbackCollection, withDefer } from '../../src/index.js';

export async function main() {
  const outside = currentCollection(); // undefined: no scope here, and no throw
  const inside = await withDefer(() => {
    defer(() => undefined, { name: 'welcome-mail' });
    defer(() => undefined, { name: 'audit', always: true });
    const collection = currentCollection()!;
    const before = collection.size;
    const removed = collection.forget('welcome-mail'); // the same as forget() in this scope
    return {
      isCollection: collection instanceof DeferredCallbackCollection,
      before,
      removed,
      after: collection.size,
      waiting: [...collection].map((cb) => `${cb.name}${cb.isAlways ? ' (always)' : ''}`),
    };
  });
  return { outside, inside };
}
