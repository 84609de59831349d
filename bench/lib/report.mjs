// Targets, the stdout table, bench/results.md and bench/chart.svg.

export const VARIANT_LABEL = {
  bare: 'bare app',
  floor: 'floor: ALS.run + close listener + array',
  hand: 'hand-rolled: on-finished + array (no ALS)',
  rd: 'request-defer, one defer() per request',
  'rd-idle': 'request-defer, no defer() call',
  poppinss: '@poppinss/defer, one push() per request',
};
const FW = { express: 'Express 5', koa: 'Koa 3' };
const MB = 2 ** 20;

const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');
const int = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '—');
const mb = (x) => (Number.isFinite(x) ? (x / MB).toFixed(2) : '—');
const nodeLabel = (n) => (n.major === '22acf' ? 'N22+ACF' : `N${n.major}`);

// ---------------------------------------------------------------------------
// Targets (SPEC.md "Performance", issue 6). A target is a benchmark result,
// never a test: missing one prints MISSED and does not fail the run.

export function evaluateTargets(results) {
  const t = [];
  const add = (node, what, value, shown, target, met) => t.push({ node: nodeLabel(node), what, value, shown, target, met });
  for (const n of results.nodes) {
    for (const [fw, res] of Object.entries(n.throughput ?? {})) {
      const rd = res.variants.rd;
      if (rd === undefined) continue;
      const cpu = (x) => (Number.isFinite(x) ? ` (by CPU per request: ${f(x, 3)}×)` : '');
      add(n, `${FW[fw]}: request-defer req/s vs floor`, rd.vsFloor, `${f(rd.vsFloor, 3)}×${cpu(rd.cpuVsFloor)}`, '≥ 0.98×', rd.vsFloor >= 0.98);
      if (fw === 'express') {
        add(n, `${FW[fw]}: request-defer req/s vs hand-rolled`, rd.vsHand, `${f(rd.vsHand, 3)}×${cpu(rd.cpuVsHand)}`, '≥ 1.05×', rd.vsHand >= 1.05);
      }
    }
    for (const [fw, res] of Object.entries(n.latency ?? {})) {
      const r = res.routes.deferred.p99VsNone;
      add(n, `${FW[fw]}: p99 with 20 ms deferred work ÷ p99 with none (${res.rate} req/s)`, r, `${f(r, 3)}×`, '≤ 1.10×', r <= 1.1);
    }
    if (n.overload) {
      const o = n.overload;
      add(n, `overload ${f(o.overloadFactor, 1)}×: peak queued vs maxQueued ${o.maxQueued}`, o.peakQueued, String(o.peakQueued), `≤ ${o.maxQueued}`, o.peakQueued <= o.maxQueued);
      const d = (o.afterDrain - o.baseline) / MB;
      add(n, 'overload: heap after drain + GC − baseline', d, `${f(d)} MB`, '≤ 5 MB', d <= 5);
    }
    if (n.micro) {
      const m = n.micro;
      const ns = m.deferCost.defer.medianNs;
      add(n, 'defer() median cost inside a scope', ns, `${f(ns, 0)} ns`, '≤ 1000 ns', ns <= 1000);
      const s = m.scheduler.callsPerSec;
      const vsBare = s.rd / s.bare;
      const restoreNote = s.restore === undefined ? '' : ` (context-restore floor: ${f((s.restore / s.bare) * 100, 0)}%)`;
      add(n, `scheduler: ${m.scheduler.n} async callbacks vs bare await loop (same process)`, vsBare, `${f(vsBare * 100, 0)}%${restoreNote}`, '≥ 50%', vsBare >= 0.5);
      const vsPop = s.rd / s.poppinss;
      add(n, 'scheduler vs @poppinss/defer queue', vsPop, `${f(vsPop, 2)}×`, '≥ 20×', vsPop >= 20);
      for (const kind of ['unnamed', 'named']) {
        const r = m.linear[`${kind}Ratio`];
        add(n, `linear growth, ${kind}: 100 000 ÷ 10 000 callbacks in one scope`, r, `${f(r, 1)}× (floor control: ${f(m.linear.floorRatio, 1)}×)`, '≈ 10× (≤ 12×)', r <= 12);
      }
    }
    if (n.memory) {
      const d = (n.memory.afterDrain - n.memory.baseline) / MB;
      add(n, `memory: heap after ${int(n.memory.scopes)} deferring scopes, drain + GC − baseline`, d, `${f(d)} MB`, '≤ 5 MB', d <= 5);
    }
    if (n.promises) {
      const worst = Math.max(...Object.values(n.promises.adapters).map((a) => a.sync.promisesPerRequest));
      add(n, 'promises created on a sync callback\'s terminate path (per request, worst adapter)', worst, f(worst, 2), '0', worst === 0);
    }
  }
  return t;
}

// ---------------------------------------------------------------------------
// Tables

function table(head, rows, align) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) =>
    cells.map((c, i) => (align?.[i] === 'l' ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

function mdTable(head, rows, align) {
  const sep = head.map((_, i) => (align?.[i] === 'l' ? ':--' : '--:'));
  return [head, sep, ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

function sections(results) {
  const out = [];
  const nodes = results.nodes;
  const p = results.plan;
  // Throughput
  const tRows = [];
  for (const n of nodes) {
    for (const [fw, res] of Object.entries(n.throughput ?? {})) {
      for (const [v, r] of Object.entries(res.variants)) {
        tRows.push([
          nodeLabel(n),
          FW[fw],
          VARIANT_LABEL[v],
          int(r.rps),
          f(r.p50),
          f(r.p99),
          f(r.vsBare, 3),
          f(r.vsFloor, 3),
          f(r.vsHand, 3),
          f(r.cpuUs, 1),
          f(r.cpuVsBare, 3),
          f(r.cpuVsFloor, 3),
          f(r.cpuVsHand, 3),
        ]);
      }
    }
  }
  if (tRows.length > 0) {
    out.push({
      title: `Throughput: ${p.connections} connections, ${p.throughput.rounds} alternating round(s) of ${p.throughput.duration} s per variant`,
      note:
        'req/s, p50 and p99 (ms) are medians over rounds; ×bare/×floor/×hand are medians of per-round req/s ratios (each round runs every variant once, in rotated order). ' +
        'cpu µs/req is the server process\'s CPU time (user + system) per response; its ratios (cpu×…, inverse CPU cost) are far less sensitive to other load on the machine than req/s.',
      head: ['node', 'framework', 'variant', 'req/s', 'p50 ms', 'p99 ms', '×bare', '×floor', '×hand', 'cpu µs/req', 'cpu×bare', 'cpu×floor', 'cpu×hand'],
      align: ['l', 'l', 'l'],
      rows: tRows,
    });
  }
  // Latency
  const lRows = [];
  for (const n of nodes) {
    for (const [fw, res] of Object.entries(n.latency ?? {})) {
      const r = res.routes;
      lRows.push([
        nodeLabel(n),
        FW[fw],
        res.rate,
        `${f(r.none.p50)} / ${f(r.none.p99)}`,
        `${f(r.deferred.p50)} / ${f(r.deferred.p99)}`,
        `${f(r.inline.p50)} / ${f(r.inline.p99)}`,
        f(r.deferred.p99VsNone, 3),
        f(r.inline.p99VsNone, 2),
        res.dropped,
      ]);
    }
  }
  if (lRows.length > 0) {
    out.push({
      title: `Latency isolation: fixed rate (autocannon -R), ${p.latency.rounds} alternating round(s) of ${p.latency.duration} s, concurrency raised to 1000 so no deferred callback waits`,
      note:
        'Routes: none (no deferred work), deferred (defer(() => sleep 20 ms)), inline (await sleep 20 ms before responding). ' +
        'Latencies p50 / p99 in ms, exact (per response), over the responses of all rounds pooled; req/s is the median over rounds.',
      head: ['node', 'framework', 'req/s', 'none p50/p99', 'deferred p50/p99', 'inline p50/p99', 'deferred p99 ÷ none', 'inline p99 ÷ none', 'dropped'],
      align: ['l', 'l'],
      rows: lRows,
    });
  }
  // Overload
  const oRows = [];
  for (const n of nodes) {
    const o = n.overload;
    if (!o) continue;
    oRows.push([
      nodeLabel(n),
      `${o.rate} (${f(o.rate / o.capacity, 0)}×)`,
      `${int(o.rps)} (${f(o.overloadFactor, 1)}×)`,
      `${f(o.p50)} / ${f(o.p99)}`,
      int(o.requests),
      int(o.dropped),
      int(o.overflowReports),
      `${o.peakQueued} / ${o.maxQueued}`,
      mb(o.baseline),
      mb(o.peakHeap),
      mb(o.afterDrain),
      int(o.drainMs),
    ]);
  }
  if (oRows.length > 0) {
    const o = nodes.find((n) => n.overload).overload;
    out.push({
      title: `Saturated run (Express 5): every request defers 20 ms of work; configureDefer({ concurrency: ${o.concurrency}, maxQueued: ${o.maxQueued} }) finishes ${o.capacity} callbacks/s; load ${o.rate} req/s for ${p.overload.duration} s`,
      note: 'Overflow counts from deferStats().dropped and from the onError reports (phase "overflow"); heap in MB (heapUsed, after two GCs for baseline and after drain, sampled every 20 ms for the peak).',
      head: ['node', 'offered req/s (×capacity)', 'served req/s (×capacity)', 'p50/p99 ms', 'requests', 'dropped', 'overflow reports', 'peak queued / max', 'heap base', 'heap peak', 'heap after drain', 'drain ms'],
      align: ['l'],
      rows: oRows,
    });
  }
  // Micro
  const mRows = [];
  const sRows = [];
  const lcRows = [];
  for (const n of nodes) {
    const m = n.micro;
    if (!m) continue;
    mRows.push([nodeLabel(n), f(m.deferCost.defer.medianNs, 0), f(m.deferCost.deferNamed.medianNs, 0), f(m.deferCost.floorPush.medianNs, 0)]);
    const lc = m.lifecycle;
    const added = (k) => `${f(lc[k].medianNs - lc.bare.medianNs, 0)}`;
    lcRows.push([nodeLabel(n), f(lc.bare.medianNs, 0), added('floor'), added('hand'), added('rd'), added('rdIdle'), f(lc.rd.medianNs - lc.floor.medianNs, 0)]);
    const c = m.scheduler.callsPerSec;
    sRows.push([
      nodeLabel(n),
      f(c.barePristine / 1e6),
      f(c.bare / 1e6),
      f(c.alsLoop / 1e6),
      c.restore === undefined ? '—' : f(c.restore / 1e6),
      f(c.rd / 1e6),
      f(c.poppinss / 1e6),
      `${f((c.rd / c.bare) * 100, 0)}%`,
      `${f((c.rd / c.barePristine) * 100, 0)}%`,
      `${f(c.rd / c.poppinss, 2)}×`,
      `${f(m.linear.ms['unnamed 10000'], 1)} → ${f(m.linear.ms['unnamed 100000'], 1)} (${f(m.linear.unnamedRatio, 1)}×)`,
      `${f(m.linear.ms['named 10000'], 1)} → ${f(m.linear.ms['named 100000'], 1)} (${f(m.linear.namedRatio, 1)}×)`,
      `${f(m.linear.ms['floor 10000'], 1)} → ${f(m.linear.ms['floor 100000'], 1)} (${f(m.linear.floorRatio, 1)}×)`,
    ]);
  }
  if (mRows.length > 0) {
    out.push({
      title: 'defer() call cost (tinybench; median of batch means, 100 calls per fresh withDefer scope), ns per call',
      head: ['node', 'defer(fn)', 'defer(fn, { name })', 'floor: als.getStore().push(fn)'],
      align: ['l'],
      rows: mRows,
    });
    out.push({
      title: 'Scheduler throughput (M no-op async calls/s, 10 000 per iteration) and linear growth (ms per scope, 10 000 → 100 000 callbacks)',
      note: '"bare (no ALS)" is the loop in the same process before any AsyncLocalStorage was enabled; every other column runs after the library\'s ALS is enabled, as in any process that uses it (on Node 20/22 that makes every promise pay an async_hooks hook). Targets compare with "bare loop".',
      head: ['node', 'bare (no ALS)', 'bare loop', 'loop in ALS.run', 'context restore per call', 'request-defer', '@poppinss/defer', 'rd ÷ bare', 'rd ÷ bare (no ALS)', 'rd ÷ poppinss', 'linear unnamed', 'linear named', 'linear control (floor)'],
      align: ['l'],
      rows: sRows,
    });
    out.push({
      title: 'Request lifecycle without the network (ns per request: bare, then what each middleware adds to it)',
      note: 'In-process, a response stand-in goes through middleware → handler (one no-op deferred) → finish → close; medians of batch means. Far less sensitive to other load than req/s: compare the added cost with the server CPU per request of the throughput table.',
      head: ['node', 'bare', '+floor', '+hand-rolled', '+request-defer', '+rd, no defer()', 'request-defer − floor'],
      align: ['l'],
      rows: lcRows,
    });
  }
  // Memory and promises
  const memRows = [];
  for (const n of nodes) {
    const m = n.memory;
    if (!m) continue;
    memRows.push([nodeLabel(n), int(m.scopes), mb(m.baseline), mb(m.afterScopes), int(m.pendingAtEnd), mb(m.afterDrain), f((m.afterDrain - m.baseline) / MB), int(m.totalMs)]);
  }
  if (memRows.length > 0) {
    out.push({
      title: 'Memory: withDefer scopes, one async defer() each, 1 000 at a time (heapUsed MB after two GCs)',
      head: ['node', 'scopes', 'baseline', 'after scopes', 'pending then', 'after drain', 'Δ after drain', 'total ms'],
      align: ['l'],
      rows: memRows,
    });
  }
  const pRows = [];
  for (const n of nodes) {
    const pr = n.promises;
    if (!pr) continue;
    const a = pr.adapters;
    pRows.push([nodeLabel(n), ...['node', 'express', 'koa'].map((k) => `${f(a[k].sync.promisesPerRequest, 2)} / ${f(a[k].async.promisesPerRequest, 2)}`)]);
  }
  if (pRows.length > 0) {
    out.push({
      title: 'Promises created during a request\'s close handling (async_hooks PROMISE inits per request: sync callback / async no-op callback)',
      note: 'The async column counts the callback\'s own promise plus those the library creates to settle it; target is 0 for the sync column.',
      head: ['node', 'request-defer/node', 'request-defer/express', 'request-defer/koa'],
      align: ['l'],
      rows: pRows,
    });
  }
  return out;
}

function targetLines(results) {
  return results.targets.map((t) => `${t.met ? 'MET   ' : 'MISSED'}  ${t.node.padEnd(8)} ${t.what}: ${t.shown} (target ${t.target})`);
}

function headerLines(results) {
  const m = results.machine;
  const versions = results.nodes.map((n) => n.version).join(', ');
  return [
    `Date: ${results.date}${results.quick ? ' (quick mode: short single rounds, indicative only)' : ''}`,
    `Node versions: ${versions}`,
    `request-defer: ${results.revision}`,
    `Machine: nproc ${m.nproc}, ${m.cpu}, ${m.memGiB} GiB, ${m.os}; load average ${m.loadStart.join(' ')} at start, ${m.loadEnd?.join(' ')} at end`,
    'Other processes (other agents\' test runs) may have been running on this machine: absolute numbers are noisy, ratios within a round are the figures to read.',
    `Elapsed: ${results.elapsedSec} s${results.buildNote ? ` (${results.buildNote})` : ''}`,
  ];
}

export function renderText(results) {
  const lines = ['', 'request-defer benchmarks', ...headerLines(results), ''];
  for (const s of sections(results)) {
    lines.push(s.title);
    if (s.note) lines.push(s.note);
    lines.push(table(s.head, s.rows, s.align), '');
  }
  lines.push('Targets', ...targetLines(results));
  const missed = results.targets.filter((t) => !t.met).length;
  lines.push(`${results.targets.length - missed} met, ${missed} missed`, '');
  return `${lines.join('\n')}\n`;
}

export function renderMarkdown(results) {
  const lines = [
    '# request-defer benchmark results',
    '',
    ...headerLines(results).map((l) => `- ${l}`),
    '',
    'Produced by `npm run bench` (method: [docs/benchmarks.md](../docs/benchmarks.md)). The package measured is the built `dist/`.',
    '',
    '![req/s ratio to the bare app per Node version and variant](chart.svg)',
    '',
    '## Targets',
    '',
    mdTable(
      ['', 'node', 'what', 'result', 'target'],
      results.targets.map((t) => [t.met ? 'met' : '**MISSED**', t.node, t.what, t.shown, t.target]),
      ['l', 'l', 'l'],
    ),
    '',
  ];
  for (const s of sections(results)) {
    lines.push(`## ${s.title}`, '');
    if (s.note) lines.push(s.note, '');
    lines.push(mdTable(s.head, s.rows, s.align), '');
  }
  if (results.problems.length > 0) {
    lines.push('## Harness problems', '', ...results.problems.map((p) => `- ${p.split('\n')[0]}`), '');
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
// Chart: req/s ratio to the bare app, per Node version, per variant, one
// panel per framework. Hand-written SVG.

const COLORS = { floor: '#7f7f7f', hand: '#e3a21a', rd: '#1f6fd1', 'rd-idle': '#8fb8ea', poppinss: '#b05fc2' };
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function renderSvg(results) {
  const variants = ['floor', 'hand', 'rd', 'rd-idle', 'poppinss'];
  const panels = ['express', 'koa']
    .map((fw) => ({ fw, groups: results.nodes.filter((n) => n.throughput?.[fw]).map((n) => ({ label: nodeLabel(n), v: n.throughput[fw].variants })) }))
    .filter((p) => p.groups.length > 0);
  const all = panels.flatMap((p) => p.groups.flatMap((g) => variants.map((v) => g.v[v]?.vsBare))).filter(Number.isFinite);
  const yMax = Math.max(1.2, Math.ceil((Math.max(...all, 1) + 0.05) * 10) / 10);
  const yMin = 0;
  const bar = 14;
  const gap = 18;
  const groupW = variants.length * bar + gap;
  const left = 48;
  const plotH = 220;
  const top = 58;
  const panelW = (p) => p.groups.length * groupW + gap;
  const width = Math.max(820, left + panels.reduce((w, p) => w + panelW(p) + 40, 0) + 10);
  const height = top + plotH + 92;
  const y = (v) => top + plotH - ((Math.min(v, yMax) - yMin) / (yMax - yMin)) * plotH;
  const el = [];
  el.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${left}" y="18" font-size="14" font-weight="bold">req/s relative to the bare app (1.0 = bare), median of per-round ratios</text>`,
    `<text x="${left}" y="34" fill="#555">${esc(`${results.date.slice(0, 10)} · nproc ${results.machine.nproc} · ${results.machine.cpu} · other processes may have been running`)}</text>`,
    `<text x="${left}" y="${height - 12}" fill="#555" font-size="10">${esc('Red tick: 0.98 × the floor bar. Targets are judged on the per-round request-defer ÷ floor ratios (results.md), which differ from the ratio of two bars when rounds disagree.')}</text>`,
  );
  let x0 = left;
  for (const p of panels) {
    const w = panelW(p);
    el.push(`<text x="${x0 + w / 2}" y="${top - 8}" text-anchor="middle" font-size="13" font-weight="bold">${FW[p.fw]}</text>`);
    for (let t = 0; t <= yMax + 1e-9; t += 0.2) {
      const yy = y(t).toFixed(1);
      el.push(`<line x1="${x0}" x2="${x0 + w}" y1="${yy}" y2="${yy}" stroke="${Math.abs(t - 1) < 1e-9 ? '#000' : '#e3e3e3'}" stroke-width="${Math.abs(t - 1) < 1e-9 ? 1 : 0.7}"/>`);
      if (x0 === left) el.push(`<text x="${x0 - 6}" y="${(+yy + 4).toFixed(1)}" text-anchor="end" fill="#555">${t.toFixed(1)}</text>`);
    }
    p.groups.forEach((g, gi) => {
      const gx = x0 + gap / 2 + gi * groupW;
      variants.forEach((v, vi) => {
        const r = g.v[v]?.vsBare;
        if (!Number.isFinite(r)) return;
        const bx = gx + vi * bar;
        const by = y(r);
        el.push(
          `<rect x="${bx}" y="${by.toFixed(1)}" width="${bar - 2}" height="${(y(0) - by).toFixed(1)}" fill="${COLORS[v]}"><title>${esc(`${g.label} ${FW[p.fw]} ${VARIANT_LABEL[v]}: ${r.toFixed(3)}× bare`)}</title></rect>`,
          `<text x="${bx + (bar - 2) / 2}" y="${(by - 3).toFixed(1)}" text-anchor="middle" font-size="8" fill="#333" transform="rotate(-90 ${bx + (bar - 2) / 2} ${(by - 3).toFixed(1)})" dx="12" dy="3">${r.toFixed(2)}</text>`,
        );
      });
      // target marker over the request-defer bar: 0.98 × floor
      const target = 0.98 * g.v.floor?.vsBare;
      if (Number.isFinite(target)) {
        const tx = gx + variants.indexOf('rd') * bar - 2;
        el.push(`<line x1="${tx}" x2="${tx + bar + 2}" y1="${y(target).toFixed(1)}" y2="${y(target).toFixed(1)}" stroke="#c00" stroke-width="2"/>`);
      }
      el.push(`<text x="${gx + (variants.length * bar) / 2}" y="${top + plotH + 16}" text-anchor="middle" font-weight="bold">${esc(g.label)}</text>`);
    });
    x0 += w + 40;
  }
  const ly = top + plotH + 40;
  variants.forEach((v, i) => {
    const lx = left + (i % 3) * 250;
    const yy = ly + Math.floor(i / 3) * 18;
    el.push(`<rect x="${lx}" y="${yy - 9}" width="12" height="12" fill="${COLORS[v]}"/>`, `<text x="${lx + 17}" y="${yy + 1}">${esc(VARIANT_LABEL[v])}</text>`);
  });
  el.push('</svg>');
  return `${el.join('\n')}\n`;
}
