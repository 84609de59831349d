import { defer, drain, forget, withDefer } from '../../src/index.js';

export async function main() {
  const ran: string[] = [];

  // Nested: a defer() inside a running callback joins the same invocation.
  await withDefer(
    () => {
      defer(
        () => {
          ran.push('first');
          defer(() => void ran.push('nested in first')); // sequential: after the callbacks already waiting
          forget('third'); // 'third' has not started: removed
          defer(() => void ran.push('first, again'), { name: 'first' }); // 'first' has started: a new callback
        },
        { name: 'first' },
      );
      defer(() => void ran.push('second'));
      defer(() => void ran.push('third'), { name: 'third' });
    },
    { await: true },
  );

  // Late: a defer() after the scope's invocation completed is judged by the same outcome.
  let release!: () => void;
  const later = new Promise<void>((resolve) => (release = resolve));
  let lateOk!: Promise<void>;
  let lateFailed!: Promise<void>;
  await withDefer(
    () => {
      lateOk = later.then(() => void defer(() => void ran.push('late, scope ok')));
    },
    { await: true },
  );
  await withDefer(() => {
    lateFailed = later.then(() => {
      defer(() => void ran.push('late, scope failed')); // skipped: fn threw
      defer(() => void ran.push('late always, scope failed')).always();
    });
    throw new Error('job failed');
  }).catch(() => undefined);
  release();
  await Promise.all([lateOk, lateFailed]); // the late defer() calls have been made
  await drain(); // and what they registered has run
  return ran;
}
