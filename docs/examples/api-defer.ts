import { defer, DeferError, withDefer } from '../../src/index.js';

// A stand-in for a mailer that honours an AbortSignal.
async function sendWelcomeMail(to: string, options: { signal: AbortSignal }): Promise<string> {
  options.signal.throwIfAborted();
  return `welcome mail to ${to}`;
}

export async function main() {
  // Bad calls throw a DeferError, and register nothing.
  const codes: string[] = [];
  for (const attempt of [
    () => defer(() => undefined), // outside any scope
    () => defer('send mail' as never), // not a function (checked before the scope)
    () => defer(() => undefined, { timout: 5_000 } as never), // unknown option (a typo)
  ]) {
    try {
      attempt();
    } catch (error) {
      if (error instanceof DeferError) codes.push(error.code);
    }
  }

  const log: string[] = [];
  const registered = await withDefer(
    () => {
      const mail = defer(
        async ({ signal, outcome, name }) => {
          // signal is aborted at the timeout, or when drain() gives up: pass it to your I/O.
          log.push(`${name}: ${await sendWelcomeMail('ada@example.com', { signal })} (${outcome.kind} outcome)`);
        },
        { name: 'welcome-mail', timeout: 10_000 },
      );
      const audit = defer(function audit() {}).always(); // Laravel's defer(fn)->always()
      return [mail, audit].map((cb) => ({ name: cb.name, isAlways: cb.isAlways, options: cb.options }));
    },
    { await: true },
  );
  return { codes, registered, log };
}
