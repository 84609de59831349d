// A fire-and-forget analytics ping. `behaviour` lets the demo routes show a
// failing callback ('down') and one that passes its timeout ('hangs').
import { defer } from 'request-defer';
import { sleep } from '../lib/http.mjs';

export function track(event, props, behaviour) {
  return defer(
    async ({ signal }) => {
      if (behaviour === 'hangs') await sleep(60_000, signal); // the timeout aborts `signal` after 800 ms
      await sleep(60, signal);
      if (behaviour === 'down') throw new Error('analytics endpoint answered 503 Service Unavailable (simulated)');
      void event;
      void props;
    },
    { name: 'analytics', timeout: 800 },
  );
}
