import dc from 'node:diagnostics_channel';
import { defer, withDefer } from '../../src/index.js';

export async function main() {
  const messages: string[] = [];
  const onScope = (message: unknown) => {
    const { outcome, size } = message as { outcome: { kind: string; ok: boolean }; size: number };
    messages.push(`scope: ${outcome.kind} ok=${outcome.ok}, ${size} waiting`);
  };
  const onSkip = (message: unknown) => {
    const { name, reason } = message as { name: string; reason: string };
    messages.push(`skip: ${name} (${reason})`);
  };
  dc.subscribe('request-defer:scope', onScope);
  dc.subscribe('request-defer:skip', onSkip);
  try {
    await withDefer(() => {
      defer(() => undefined, { name: 'publish' });
      defer(() => undefined, { name: 'cleanup', always: true });
      throw new Error('job failed');
    }).catch(() => undefined);
    await withDefer(() => void defer(() => undefined, { name: 'nightly-report' }), { runWhen: () => false });
  } finally {
    dc.unsubscribe('request-defer:scope', onScope);
    dc.unsubscribe('request-defer:skip', onSkip);
  }
  return messages;
}
