import { accessSync, constants } from 'node:fs';

/** Where Debian's `chromium` package installs the browser (TOOLCHAIN.md). */
export const CHROMIUM_PATH = '/usr/bin/chromium';

/**
 * Returns the Chromium executable for playwright-core, or throws an Error
 * whose message is the command that installs it. Call it from a browser
 * test's `beforeAll`: only runs that include such a test need Chromium.
 *
 * @example
 * ```ts
 * const browser = await chromium.launch({ executablePath: requireChromium(), args: ['--headless', '--no-sandbox', '--disable-gpu'] });
 * ```
 */
export function requireChromium(): string {
  try {
    accessSync(CHROMIUM_PATH, constants.X_OK);
  } catch {
    throw new Error('apt-get update && apt-get install -y chromium');
  }
  return CHROMIUM_PATH;
}
