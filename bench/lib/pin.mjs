// CPU pinning shared by the benchmark runners.
import { execFileSync } from 'node:child_process';
import os from 'node:os';

/**
 * CPU pinning: on a machine with 2+ CPUs and taskset(1), the runner (which
 * drives autocannon) stays on the first CPU this process may use and every
 * measured child process on the second, so the load generator and the
 * server never trade places on a core. Pins this process; returns the CPUs,
 * or undefined (unpinned) when `disabled`, on one CPU or without taskset.
 */
export function pinPlan(disabled = false) {
  if (disabled || os.availableParallelism() < 2) return undefined;
  try {
    // The first two CPUs this process may use ("pid N's current affinity list: 0-3,6").
    const list = execFileSync('taskset', ['-p', '-c', String(process.pid)], { encoding: 'utf8' }).split(':').pop().trim();
    const cpus = list.split(',').flatMap((part) => {
      const [a, b = a] = part.split('-').map(Number);
      return Array.from({ length: b - a + 1 }, (_, i) => String(a + i));
    });
    if (cpus.length < 2) return undefined;
    execFileSync('taskset', ['-a', '-p', '-c', cpus[0], String(process.pid)], { stdio: 'ignore' });
    return { runner: cpus[0], children: cpus[1] };
  } catch {
    return undefined;
  }
}
