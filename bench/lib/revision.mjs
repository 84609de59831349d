// Which request-defer a benchmark measured: the commit, whether src/ had
// uncommitted changes, and when dist/ (what the servers load) was built.
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';

export function revision(root) {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: root, encoding: 'utf8' }).trim() !== '';
    const built = new Date(statSync(join(root, 'dist', 'index.js')).mtimeMs).toISOString();
    return `${head}${dirty ? ' + uncommitted src/ changes' : ''}; dist/ built ${built}`;
  } catch {
    return 'unknown';
  }
}
