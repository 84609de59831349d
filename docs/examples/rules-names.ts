import { defer, forget, withDefer } from '../../src/index.js';

export async function main() {
  const ran: string[] = [];
  const outsideAScope = forget('anything'); // false, never throws
  const forgotten = await withDefer(
    () => {
      defer(() => void ran.push('recompute cart v1'), { name: 'recompute-cart' });
      defer(() => void ran.push('send receipt'), { name: 'receipt' });
      // Same name, not started yet: v1 is removed, v2 runs where it was registered (last).
      defer(() => void ran.push('recompute cart v2'), { name: 'recompute-cart' });
      // Unnamed callbacks never replace each other; forget() also takes a generated name.
      const ping = defer(function ping() {
        ran.push('ping');
      });
      return { ping: ping.name, byGeneratedName: forget(ping.name), unknown: forget('no-such-name') };
    },
    { await: true },
  );
  return { ran, outsideAScope, forgotten };
}
