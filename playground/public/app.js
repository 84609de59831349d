/* global requestAnimationFrame */
// The playground page: sends demo requests and draws one timeline per
// request from the server's event stream (request-defer's diagnostics_channel
// events, correlated with requests on the server). No build step.

const LABELS = {
  success: 'Sign up',
  invalid: 'Invalid email',
  crash: 'Database down',
  abort: 'Client aborts',
  'analytics-down': 'Analytics fails',
  'analytics-hangs': 'Analytics hangs',
};

const PEOPLE = [
  ['Ada Lovelace', 'ada@example.com'],
  ['Grace Hopper', 'grace@example.com'],
  ['Alan Turing', 'alan@example.com'],
  ['Katherine Johnson', 'katherine@example.com'],
  ['Edsger Dijkstra', 'edsger@example.com'],
  ['Barbara Liskov', 'barbara@example.com'],
];
let personIndex = 0;
function person() {
  const [name, email] = PEOPLE[personIndex++ % PEOPLE.length];
  return { name, email };
}

const MAX_CARDS = 20;
const requests = new Map(); // id -> request state, in arrival order
const hidden = new Set(); // ids cleared from the view
const timeline = document.getElementById('timeline');
const live = document.getElementById('live');
document.getElementById('port').textContent = window.location.port || '80';

// --- Sending requests -------------------------------------------------------

async function post(path, body, action, init = {}) {
  return fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-demo': action },
    body: JSON.stringify(body),
    ...init,
  });
}

/** Reads the first chunk of a slow streamed response, then aborts the fetch. */
async function abortAfterFirstChunk() {
  const controller = new AbortController();
  const response = await post('/api/signup/slow', person(), 'abort', { signal: controller.signal });
  const reader = response.body.getReader();
  await reader.read();
  controller.abort();
  await reader.read().catch(() => {});
}

const actions = {
  success: () => post('/api/signup', person(), 'success'),
  invalid: () => post('/api/signup', { ...person(), email: 'not-an-email' }, 'invalid'),
  crash: () => post('/api/signup/crash', person(), 'crash'),
  abort: abortAfterFirstChunk,
  'analytics-down': () => post('/api/signup/analytics-down', person(), 'analytics-down'),
  'analytics-hangs': () => post('/api/signup/analytics-hangs', person(), 'analytics-hangs'),
  clear() {
    for (const id of requests.keys()) hidden.add(id);
    requests.clear();
    render();
  },
};

document.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]');
  if (button === null) return;
  Promise.resolve(actions[button.dataset.action]()).catch((error) => {
    if (error?.name !== 'AbortError') console.error(error);
  });
});

// --- The event stream -------------------------------------------------------

function connect() {
  const source = new EventSource('/events');
  source.onopen = () => {
    // The server replays its recent history on every (re)connection.
    requests.clear();
  };
  source.addEventListener('ready', (event) => {
    const info = JSON.parse(event.data);
    document.getElementById('server').textContent =
      `${info.framework === 'koa' ? 'Koa 3' : 'Express 5'}${info.queue ? ' · mail via BullMQ' : ''}`;
    document.body.classList.toggle('queue', info.queue);
    live.dataset.state = 'live';
    live.textContent = 'live';
    document.body.dataset.ready = 'true';
    render();
  });
  source.onmessage = (event) => apply(JSON.parse(event.data));
  source.onerror = () => {
    live.dataset.state = 'down';
    live.textContent = 'reconnecting…';
  };
}

function apply(event) {
  if (hidden.has(event.id)) return;
  let req = requests.get(event.id);
  if (req === undefined) {
    if (event.type !== 'request') return;
    req = { id: event.id, lanes: new Map(), jobs: new Map(), scope: undefined, finish: undefined, close: undefined };
    requests.set(event.id, req);
    if (requests.size > MAX_CARDS) requests.delete(requests.keys().next().value);
  }
  req.sync = { t: event.t, at: performance.now() };
  switch (event.type) {
    case 'request':
      Object.assign(req, { method: event.method, path: event.path, demo: event.label, at: event.at });
      break;
    case 'finish':
      req.finish = event;
      break;
    case 'close':
      req.close = event;
      break;
    case 'scope':
      req.scope = event;
      break;
    case 'callback-start':
      lane(req, event).start = event.t;
      break;
    case 'callback-end': {
      const l = lane(req, event);
      Object.assign(l, { end: event.t, state: event.state, error: event.error });
      break;
    }
    case 'skip':
      Object.assign(lane(req, event), { skipAt: event.t, state: `skipped-${event.reason}` });
      break;
    case 'job': {
      const key = event.jobId ?? event.name;
      const job = req.jobs.get(key) ?? { name: event.name };
      req.jobs.set(key, job);
      if (event.state === 'active') job.start = event.t;
      else Object.assign(job, { end: event.t, state: event.state, error: event.error });
      break;
    }
  }
  scheduleRender();
}

function lane(req, event) {
  let key = event.fullName;
  let l = req.lanes.get(key);
  if (l !== undefined && event.type === 'callback-start' && l.start !== undefined) {
    // Same name again (a nested defer() re-using it): give it its own lane.
    key = `${key}~${req.lanes.size}`;
    l = undefined;
  }
  if (l === undefined) {
    l = { name: event.name, fullName: event.fullName, state: 'running' };
    req.lanes.set(key, l);
  }
  return l;
}

// --- Rendering --------------------------------------------------------------

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

const escapeMap = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const esc = (value) => String(value ?? '').replace(/[&<>"']/g, (c) => escapeMap[c]);

function ms(t) {
  return t >= 1000 ? `${(t / 1000).toFixed(2)} s` : `${Math.round(t)} ms`;
}

function serverNow(req) {
  return req.sync.t + (performance.now() - req.sync.at);
}

function isRunning(req) {
  if (req.finish === undefined && req.close === undefined) return true;
  for (const l of req.lanes.values()) if (l.state === 'running') return true;
  for (const j of req.jobs.values()) if (j.end === undefined) return true;
  return false;
}

function settled(req) {
  if (req.scope === undefined) return false;
  let terminal = 0;
  for (const l of req.lanes.values()) if (l.state !== 'running') terminal++;
  for (const j of req.jobs.values()) if (j.end === undefined) return false;
  return terminal >= req.scope.size;
}

function outcomeOf(req) {
  if (req.close?.aborted) return 'aborted';
  const status = req.finish?.statusCode;
  if (status === undefined) return 'pending';
  return status < 400 ? 'ok' : 'failed';
}

/** A scale that fits everything seen so far, with round ticks. */
function scaleFor(req) {
  let max = 0;
  const see = (t) => {
    if (t !== undefined && t > max) max = t;
  };
  see(req.finish?.t);
  see(req.close?.t);
  see(req.scope?.t);
  for (const l of req.lanes.values()) [l.start, l.end, l.skipAt].forEach(see);
  for (const j of req.jobs.values()) [j.start, j.end].forEach(see);
  if (isRunning(req)) see(serverNow(req));
  const want = Math.max(500, max * 1.1);
  const step = [50, 100, 200, 250, 500, 1000, 2000, 5000, 10000].find((s) => want / s <= 6) ?? 20000;
  const domain = Math.ceil(want / step) * step;
  return { domain, step, x: (t) => `${Math.min(100, (t / domain) * 100).toFixed(3)}%` };
}

function bar(cls, from, to, scale, extra = '') {
  const width = Math.max(0, ((to - from) / scale.domain) * 100);
  return `<span class="bar ${cls}" style="left:${scale.x(from)};width:${width.toFixed(3)}%"${extra}></span>`;
}

function note(cls, from, to, text, scale) {
  const width = (to - from) / scale.domain;
  if (width > 0.3 && cls !== '') {
    return `<span class="note inside" style="left:calc(${scale.x(from)} + 8px)">${text}</span>`;
  }
  const atEnd = to / scale.domain < 0.72;
  return atEnd
    ? `<span class="note ${cls}" style="left:calc(${scale.x(to)} + 6px)">${text}</span>`
    : `<span class="note ${cls} left" style="left:calc(${scale.x(from)} - 6px)">${text}</span>`;
}

const SKIP_TEXT = {
  'skipped-status': (req) => `skipped · status ${req.finish?.statusCode ?? ''}`,
  'skipped-aborted': () => 'skipped · client aborted',
  'skipped-runWhen': () => 'skipped · runWhen',
};
const STATE_TEXT = { ran: 'ran', failed: 'failed', 'timed-out': 'timed out', abandoned: 'abandoned', running: 'running' };

function laneHtml(req, l, scale) {
  let track;
  if (l.state.startsWith('skipped-')) {
    track = `<span class="chip ${l.state}" style="left:${scale.x(l.skipAt ?? 0)}">${esc(SKIP_TEXT[l.state](req))}</span>`;
  } else {
    const end = l.end ?? serverNow(req);
    track = bar(l.state, l.start, end, scale);
    const text = l.state === 'running' ? `running · ${ms(end - l.start)}` : `${STATE_TEXT[l.state]} · ${ms(end - l.start)}`;
    track += note(l.state, l.start, end, esc(text), scale);
  }
  const title = l.error ? ` title="${esc(l.error)}"` : '';
  return `<div class="lane" data-callback="${esc(l.name)}" data-state="${esc(l.state)}"${title}>
    <span class="name">${esc(l.name)}${l.fullName !== l.name ? ` <small>${esc(l.fullName.slice(l.name.length))}</small>` : ''}</span>
    <span class="track">${track}</span></div>`;
}

function jobHtml(req, job, scale) {
  const start = job.start ?? serverNow(req);
  const end = job.end ?? serverNow(req);
  const state = job.end === undefined ? 'running' : job.state === 'completed' ? 'job' : 'failed';
  const text = job.end === undefined ? 'worker running' : `${job.state === 'completed' ? 'worker sent it' : 'job failed'} · ${ms(end - start)}`;
  return `<div class="lane" data-job="${esc(job.name)}" data-state="${esc(job.state ?? 'active')}">
    <span class="name">${esc(job.name)} <small>job</small></span>
    <span class="track">${bar(state, start, end, scale)}${note(state, start, end, esc(text), scale)}</span></div>`;
}

function responseHtml(req, scale) {
  const aborted = req.close?.aborted === true;
  const end = aborted ? req.close.t : req.finish?.t ?? serverNow(req);
  const text = aborted
    ? `client aborted after ${ms(end)}`
    : req.finish
      ? `${req.finish.statusCode} sent after ${ms(end)}`
      : `handling · ${ms(end)}`;
  return `<div class="lane response-lane" data-state="${aborted ? 'aborted' : req.finish ? 'finished' : 'pending'}">
    <span class="name">response</span>
    <span class="track">${bar(`response${aborted ? ' aborted' : ''}`, 0, end, scale)}${note('', 0, end, esc(text), scale)}</span></div>`;
}

function names(list) {
  return list.map((l) => `<b>${esc(l.name)}</b>`).join(', ');
}

function summaryHtml(req) {
  const lanes = [...req.lanes.values()];
  const by = (pred) => lanes.filter(pred);
  const ran = by((l) => l.state === 'ran');
  const skipped = by((l) => l.state.startsWith('skipped-'));
  const failed = by((l) => l.state === 'failed');
  const timedOut = by((l) => l.state === 'timed-out');
  const parts = [];
  const outcome = outcomeOf(req);
  if (outcome === 'pending') return 'Waiting for the response…';
  if (outcome === 'aborted') {
    parts.push('<b>Aborted</b>: the client closed the connection before the response finished, so only <code>always</code> callbacks run.');
  } else if (outcome === 'failed') {
    parts.push(`<b>${req.finish.statusCode}</b>: status ≥ 400, so only <code>always</code> callbacks run.`);
  } else {
    parts.push(`<b>${req.finish.statusCode}</b>: the client had its response after ${ms(req.finish.t)}; deferred work ran after that, in order.`);
  }
  if (ran.length) parts.push(`Ran: ${names(ran)}.`);
  if (skipped.length) parts.push(`Skipped: ${names(skipped)}.`);
  for (const l of failed) parts.push(`${names([l])} failed: <span class="err">${esc(l.error)}</span> (reported to <code>onError</code>; the others kept going).`);
  for (const l of timedOut) parts.push(`${names([l])} timed out: its <code>signal</code> was aborted and its slot freed.`);
  if (!settled(req) && req.scope !== undefined) parts.push('…');
  return parts.join(' ');
}

function cardHtml(req) {
  const scale = scaleFor(req);
  const outcome = outcomeOf(req);
  const status = req.close?.aborted ? 'aborted' : req.finish?.statusCode ?? '';
  const statusClass = outcome === 'aborted' ? 'aborted' : status ? `s${String(status)[0]}` : '';
  const statusText = outcome === 'aborted' ? `aborted${req.close.statusCode ? ` (${req.close.statusCode} sent)` : ''}` : status || '…';
  const ticks = [];
  const grid = [];
  for (let t = 0; t <= scale.domain + 1e-6; t += scale.step) {
    ticks.push(`<span class="tick" style="left:${scale.x(t)}">${t === 0 ? '0' : ms(t)}</span>`);
    grid.push(`<i style="left:${scale.x(t)}"></i>`);
  }
  const sentAt = req.close?.aborted ? req.close.t : req.finish?.t;
  const marker =
    sentAt === undefined
      ? ''
      : `<span class="marker${req.close?.aborted ? ' aborted' : ''}" data-kind="${req.close?.aborted ? 'aborted' : 'sent'}" title="${req.close?.aborted ? 'client aborted' : 'response sent'}" style="left:calc(var(--label-w) + (100% - var(--label-w)) * ${(sentAt / scale.domain).toFixed(5)})"></span>`;
  const lanes = [...req.lanes.values()].map((l) => laneHtml(req, l, scale)).join('');
  const jobs = [...req.jobs.values()].map((j) => jobHtml(req, j, scale)).join('');
  const time = req.at ? new Date(req.at).toLocaleTimeString() : '';
  return `<header>
      <span class="route">${esc(req.method)} ${esc(req.path)}</span>
      <span class="status ${statusClass}">${esc(statusText)}</span>
      <span class="label">${esc(LABELS[req.demo] ?? '')}</span>
      <span class="meta">${esc(req.id)} · ${esc(time)}</span>
    </header>
    <div class="lanes">
      <div class="grid">${grid.join('')}</div>
      ${marker}
      <div class="axis"><span></span><span class="ticks">${ticks.join('')}</span></div>
      ${responseHtml(req, scale)}${lanes}${jobs}
    </div>
    <p class="summary">${summaryHtml(req)}</p>`;
}

const cards = new Map();

function render() {
  document.getElementById('empty').hidden = requests.size > 0;
  for (const [id, card] of cards) {
    if (!requests.has(id)) {
      card.remove();
      cards.delete(id);
    }
  }
  let animate = false;
  for (const req of requests.values()) {
    let card = cards.get(req.id);
    if (card === undefined) {
      card = document.createElement('article');
      card.className = 'request';
      cards.set(req.id, card);
      timeline.prepend(card);
    }
    card.dataset.requestId = req.id;
    card.dataset.demo = req.demo ?? '';
    card.dataset.status = req.finish?.statusCode ?? req.close?.statusCode ?? '';
    card.dataset.outcome = outcomeOf(req);
    card.dataset.settled = String(settled(req));
    card.innerHTML = cardHtml(req);
    if (isRunning(req)) animate = true;
  }
  if (animate) scheduleRender();
}

connect();
