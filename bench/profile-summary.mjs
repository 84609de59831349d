// Summarises a V8 .cpuprofile (node --cpu-prof): self time per function, and
// self time grouped by where the code lives (request-defer's dist/, the
// framework, Node internals, GC).
//
//   node bench/profile-summary.mjs bench/.raw/profiles/N20-express-rd.cpuprofile [top=30]
//
// dist/ is minified only by bundling (no mangling), so function names map
// one to one onto src/ (engine.ts, api.ts, http.ts ...).
import { readFileSync } from 'node:fs';

const [file, top = '30'] = process.argv.slice(2);
if (!file) {
  process.stderr.write('usage: node bench/profile-summary.mjs FILE.cpuprofile [top]\n');
  process.exit(2);
}
const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const selfUs = new Map();
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i];
  selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
}

function where(url) {
  if (url === '') return 'engine (GC, idle, native)';
  if (url.startsWith('node:')) return 'Node internals';
  const m = /node_modules\/((@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  if (/\/dist(-snapshot)?\//.test(url)) return 'request-defer dist/';
  return url.replace(/^file:\/\//, '');
}

const perFn = new Map();
const perPlace = new Map();
const ours = new Map();
let total = 0;
let idle = 0;
for (const [id, us] of selfUs) {
  const { callFrame: cf } = byId.get(id);
  if (cf.functionName === '(idle)') {
    idle += us; // a bench server waits for its turn most of the run
    continue;
  }
  const place = where(cf.url);
  const short = cf.url.replace(/^file:\/\/.*\/(node_modules|dist(?:-snapshot)?)\//, '$1/').replace(/^file:\/\//, '');
  const key = `${cf.functionName || '(anonymous)'}  ${short}${cf.url ? `:${cf.lineNumber + 1}` : ''}`;
  perFn.set(key, (perFn.get(key) ?? 0) + us);
  perPlace.set(place, (perPlace.get(place) ?? 0) + us);
  if (place === 'request-defer dist/' || place === 'zod') ours.set(key, (ours.get(key) ?? 0) + us);
  total += us;
}
const pct = (us) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
const ms = (us) => `${(us / 1000).toFixed(1).padStart(8)} ms`;
console.log(`${file}: ${(total / 1000).toFixed(0)} ms busy (${(idle / 1000).toFixed(0)} ms idle left out); percentages of busy time`);
console.log('\nby place');
for (const [k, us] of [...perPlace].sort((a, b) => b[1] - a[1])) console.log(`${ms(us)} ${pct(us)}  ${k}`);
console.log(`\ntop ${top} functions by self time`);
for (const [k, us] of [...perFn].sort((a, b) => b[1] - a[1]).slice(0, Number(top))) console.log(`${ms(us)} ${pct(us)}  ${k}`);
console.log('\nrequest-defer (dist/) and zod functions by self time');
for (const [k, us] of [...ours].sort((a, b) => b[1] - a[1]).slice(0, Number(top))) console.log(`${ms(us)} ${pct(us)}  ${k}`);
