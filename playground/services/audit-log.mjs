// The audit trail records every attempt, failed ones included: `.always()`.
import { defer } from 'request-defer';
import { sleep } from '../lib/http.mjs';

export const auditTrail = [];

export function record(action, details) {
  const entry = { at: new Date().toISOString(), action, ...details };
  return defer(
    async ({ outcome }) => {
      await sleep(40); // an INSERT into the audit table
      auditTrail.push({ ...entry, status: outcome.statusCode, aborted: outcome.aborted });
      if (auditTrail.length > 100) auditTrail.shift();
    },
    { name: 'audit' },
  ).always();
}
