import { defer, withDefer } from '../../src/index.js';

const notified: string[] = [];

// A CLI command, a queue job or a cron tick: no HTTP, same defer().
async function importUsers(rows: string[]): Promise<number> {
  defer(() => void notified.push(`admins: ${rows.length} users imported`));
  return rows.length;
}

export async function main() {
  const imported = await withDefer(() => importUsers(['ada', 'grace']), {
    await: true, // settle once the deferred work has run, so the script may exit right after
  });
  return { imported, notified };
}
