import { configureDefer, defer, drain, waitUntil, withDefer, type DeferErrorInfo } from '../../src/index.js';

export async function main() {
  const toScope: { error: unknown; info: DeferErrorInfo }[] = [];
  const toProcess: string[] = [];
  // Process-wide handler: errors of scopes without their own onError, and of work outside any scope.
  configureDefer({ onError: (error, info) => void toProcess.push(`${info.phase} ${info.name}: ${String(error)}`) });
  try {
    // This scope has its own handler: it gets exactly what was thrown, even a non-Error.
    await withDefer(
      () => {
        defer(
          () => {
            throw 'a string, not an Error';
          },
          { name: 'odd' },
        );
      },
      { await: true, onError: (error, info) => void toScope.push({ error, info: JSON.parse(JSON.stringify(info)) }) },
    );
    // No onError here: goes to configureDefer's handler.
    await withDefer(() => void defer(() => Promise.reject(new Error('smtp down')), { name: 'mail' }), { await: true });
    waitUntil(Promise.reject(new Error('outside any scope')));
    await drain();
  } finally {
    configureDefer({ onError: undefined }); // back to stderr
  }
  return { toScope, toProcess };
}
