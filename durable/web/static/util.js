// util.js: the dashboard's shared helpers (DOM building, the JSON API client,
// event streams, formatting of times, durations and statuses).
// API values only ever reach the page as text nodes (textContent), never as HTML.

/** The app's base path ("/" or "/some/prefix/"): API urls are BASE + "api/...". */
export const BASE = location.pathname.slice(0, location.pathname.lastIndexOf('/') + 1);

const SVG_NS = 'http://www.w3.org/2000/svg';
const PROPS = new Set(['value', 'checked', 'selected', 'disabled', 'hidden', 'open']);

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = String(v);
    else if (PROPS.has(k) && !(el instanceof SVGElement)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function appendAll(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** h('div', {class: 'x', onclick: fn}, 'text', child, ...): an HTML element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** svg('rect', {...}, ...): an SVG element. */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

// ---------------------------------------------------------------- API client

export class ApiError extends Error {
  constructor(status, detail) {
    super(formatDetail(detail) || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

/** A 422 detail list, a detail string or anything else as one readable line. */
export function formatDetail(detail) {
  if (Array.isArray(detail)) {
    return detail.map((d) => {
      if (d && typeof d === 'object') {
        const loc = Array.isArray(d.loc) ? d.loc.filter((p) => p !== 'body').join('.') : '';
        return (loc ? `${loc}: ` : '') + (d.msg ?? JSON.stringify(d));
      }
      return String(d);
    }).join('; ');
  }
  if (detail === null || detail === undefined) return '';
  return typeof detail === 'string' ? detail : JSON.stringify(detail);
}

const unauthorizedListeners = [];
/** Called (once per page state) when the server answers 401. */
export function onUnauthorized(fn) { unauthorizedListeners.push(fn); }

/**
 * A JSON request to BASE + path. Non-GET requests carry the CSRF headers the
 * server requires. Resolves with the parsed body, rejects with an ApiError.
 */
export async function api(path, { method = 'GET', body } = {}) {
  const opts = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (method !== 'GET') {
    opts.headers['Content-Type'] = 'application/json';
    opts.headers['X-Requested-With'] = 'durable';
    opts.body = JSON.stringify(body === undefined ? {} : body);
  }
  let res;
  try {
    res = await fetch(BASE + path, opts);
  } catch (e) {
    throw new ApiError(0, `Cannot reach the server (${e.message})`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (res.status === 401) unauthorizedListeners.forEach((fn) => fn());
  if (!res.ok) {
    const detail = data && typeof data === 'object' && 'detail' in data ? data.detail
      : (typeof data === 'string' && data.length < 300 ? data : res.statusText);
    throw new ApiError(res.status, detail);
  }
  return data;
}

/** The path segment for an id or name. */
export const seg = (s) => encodeURIComponent(s);

// ------------------------------------------------------------- event streams

export const EVENT_NAMES = [
  'workflow.started', 'workflow.progress', 'workflow.completed', 'workflow.failed',
  'workflow.cancelled', 'workflow.step.started', 'workflow.step.completed',
  'workflow.step.failed', 'workflow.step.retry',
];

/**
 * An EventSource on BASE + path with a listener for each named event.
 * onEvent(name, data, messageEvent); onState('open'|'connecting'|'closed'|'ended').
 * The server's `end` event closes the stream for good.
 */
export function openStream(path, { onEvent, onState = () => {}, onEnd = () => {} }) {
  const es = new EventSource(BASE + path);
  onState('connecting');
  es.onopen = () => onState('open');
  es.onerror = () => onState(es.readyState === EventSource.CLOSED ? 'closed' : 'connecting');
  for (const name of EVENT_NAMES) {
    es.addEventListener(name, (ev) => {
      let data;
      try { data = JSON.parse(ev.data); } catch { data = { raw: ev.data }; }
      onEvent(name, data && typeof data === 'object' ? data : { value: data }, ev);
    });
  }
  es.addEventListener('end', () => {
    es.close();
    onState('ended');
    onEnd();
  });
  return es;
}

/** The header's live indicator: 'open' green, 'connecting' grey, 'closed'/'ended'/'idle'. */
export function setLive(state) {
  const el = document.getElementById('live');
  if (!el) return;
  const labels = { open: 'live', connecting: 'reconnecting…', closed: 'offline', ended: 'ended', idle: 'idle' };
  const titles = {
    open: 'Live updates: the event stream is open',
    connecting: 'Live updates: (re)connecting to the event stream',
    closed: 'Live updates: the event stream is closed',
    ended: 'The instance has ended: no more events',
    idle: 'No live updates on this page',
  };
  el.dataset.state = state;
  el.title = titles[state] || state;
  el.querySelector('.live-label').textContent = labels[state] || state;
}

// ----------------------------------------------------------------- statuses

export const STATUSES = ['pending', 'running', 'sleeping', 'waiting', 'completed', 'failed', 'cancelled', 'timed_out'];
export const TERMINAL = new Set(['completed', 'failed', 'cancelled', 'timed_out']);
export const ACTIVE = new Set(['running', 'sleeping', 'waiting', 'retrying']);

/** The colour family of a status: ok, bad, run, wait, idle, cancel or other. */
export function statusCat(status) {
  switch (status) {
    case 'completed': return 'ok';
    case 'failed': case 'timed_out': return 'bad';
    case 'running': case 'retrying': return 'run';
    case 'sleeping': case 'waiting': return 'wait';
    case 'pending': return 'idle';
    case 'cancelled': return 'cancel';
    default: return 'other';
  }
}

export function badge(status, attrs = {}) {
  const s = status == null ? 'unknown' : String(status);
  return h('span', { class: `badge badge-${statusCat(s)}`, 'data-status': s, ...attrs }, s);
}

// --------------------------------------------------------------- formatting

export const parseTime = (iso) => (iso ? Date.parse(iso) : NaN);

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** "2024-05-01 14:03:07" in local time ("—" when unset). */
export function fmtTime(iso) {
  const t = parseTime(iso);
  if (Number.isNaN(t)) return '—';
  const d = new Date(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "14:03:07.123": a clock time with milliseconds. */
export function fmtClock(date = new Date()) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** An age: "12 s", "3 min", "2 h", "4 d". */
export function fmtAge(ms) {
  if (!Number.isFinite(ms)) return '—';
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

/** A duration: "850 ms", "3.2 s", "4 min 12 s", "2 h 5 min". */
export function fmtDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

/** Compact JSON, cut to max characters with an ellipsis. */
export function compact(value, max = 120) {
  let text;
  if (value === undefined) return '';
  try { text = typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value); } catch { text = String(value); }
  if (text === undefined) text = String(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export function pretty(value) {
  if (value === undefined) return '';
  try { return JSON.stringify(value, null, 2) ?? String(value); } catch { return String(value); }
}

export function truncate(text, max) {
  const s = String(text ?? '');
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** fn, called at most once per `ms` after the last call. */
export function debounce(fn, ms) {
  let timer = null;
  const d = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => { timer = null; fn(...args); }, ms);
  };
  d.cancel = () => clearTimeout(timer);
  return d;
}
