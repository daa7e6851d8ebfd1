// instance.js: one instance's page (#/instances/<id>): its header and actions,
// the live graph, the steps table, a timeline of the steps and the event log,
// all refreshed from the instance's event stream (api/instances/<id>/events).
import {
  h, api, seg, badge, openStream, setLive, fmtTime, fmtClock, fmtDuration, parseTime,
  compact, pretty, truncate, debounce, statusCat, TERMINAL, ACTIVE,
} from './util.js';
import { renderGraph, applyStatuses } from './graph.js';
import { loadWorkflows } from './workflows.js';
import { progressBar } from './instances.js';

const MAX_EVENTS = 2000;

function section(title, body, extra = null, attrs = {}) {
  return h('section', { class: 'card', ...attrs },
    h('div', { class: 'card-head' }, h('h2', {}, title), extra), body);
}

function jsonPre(value, id) {
  const empty = value === undefined || value === null;
  return h('pre', { class: `json-view${empty ? ' muted' : ''}`, id }, empty ? 'null' : pretty(value));
}

export function instancePage(root, id) {
  let inst = null;
  let steps = [];
  let wf = null; // the workflow's entry from api/workflows
  let graphSvg = null;
  let es = null;
  let ended = false;
  let disposed = false;
  const seen = new Set(); // event ids shown (a reopened stream replays the log)
  const expanded = new Set(); // step keys whose output is expanded

  // ---- header
  const statusEl = h('span', { id: 'status', class: 'badge', 'data-status': '' }, '…');
  const meta = h('dl', { class: 'meta' });
  const errBox = h('div', { class: 'error-box', id: 'error', role: 'alert', hidden: true });
  const pageError = h('div', { class: 'alert alert-error', role: 'alert', hidden: true });
  const cancelBtn = h('button', { id: 'cancel', class: 'btn btn-danger', type: 'button', hidden: true }, 'Cancel');
  const resumeBtn = h('button', {
    id: 'resume', class: 'btn', type: 'button', hidden: true,
    title: 'Put an unfinished instance whose engine is gone back in its queue',
  }, 'Resume');
  const actionResult = h('span', { id: 'action-result', class: 'action-result', role: 'status' });

  // ---- signal form
  const sigName = h('input', { id: 'signal-name', type: 'text', placeholder: 'signal name', autocomplete: 'off', spellcheck: 'false' });
  const sigPayload = h('textarea', { id: 'signal-payload', rows: 3, class: 'json', placeholder: 'payload (JSON, optional)', spellcheck: 'false' });
  const sigSend = h('button', { id: 'signal-send', class: 'btn', type: 'submit' }, 'Send signal');
  const sigResult = h('span', { id: 'signal-result', class: 'action-result', role: 'status' });
  const sigForm = h('form', { class: 'signal-form', novalidate: true },
    h('label', { for: 'signal-name' }, 'Name'), sigName,
    h('label', { for: 'signal-payload' }, 'Payload'), sigPayload,
    h('div', { class: 'form-actions' }, sigSend, sigResult));

  // ---- sections
  const graphBox = h('div', { id: 'graph', class: 'graph-box' }, h('p', { class: 'muted' }, 'Loading diagram…'));
  const legend = h('div', { class: 'legend' },
    [['completed', 'completed'], ['running', 'running'], ['failed', 'failed'], ['pending', 'not reached']]
      .map(([s, label]) => h('span', { class: 'legend-item' }, h('span', { class: `swatch swatch-${statusCat(s)}` }), label)));
  const inputBox = h('div', { class: 'io' }, jsonPre(undefined, 'input'));
  const outputBox = h('div', { class: 'io' }, jsonPre(undefined, 'output'));
  const timeline = h('div', { id: 'timeline', class: 'timeline' });
  const stepsBody = h('tbody');
  const stepsTable = h('table', { id: 'steps', class: 'table steps-table' },
    h('thead', {}, h('tr', {}, ['Key', 'Name', 'Status', 'Attempts', 'Started', 'Duration', 'Error', 'Output'].map((t) => h('th', {}, t)))),
    stepsBody);
  const events = h('div', { id: 'events', class: 'events', 'aria-live': 'off' });
  const eventCount = h('span', { class: 'count' });

  root.append(
    h('nav', { class: 'crumbs' }, h('a', { href: '#/' }, 'Instances'), ' / ', h('span', { class: 'mono' }, id)),
    pageError,
    h('section', { class: 'card inst-head' },
      h('div', { class: 'inst-title' },
        h('h1', { class: 'mono', title: id }, id), statusEl,
        h('div', { class: 'actions' }, actionResult, resumeBtn, cancelBtn)),
      meta, errBox),
    h('div', { class: 'grid-2' },
      section('Graph', h('div', {}, graphBox, legend), null, { class: 'card graph-card' }),
      h('div', { class: 'stack' },
        section('Input', inputBox),
        section('Output', outputBox),
        section('Send a signal', sigForm))),
    section('Timeline', timeline),
    section('Steps', h('div', { class: 'table-scroll' }, stepsTable)),
    section('Event log', events, eventCount),
  );

  // ---- rendering

  function renderHeader() {
    statusEl.textContent = inst.status;
    statusEl.className = `badge badge-${statusCat(inst.status)}`;
    statusEl.dataset.status = inst.status;
    const item = (label, value, cls) => h('div', { class: 'meta-item' },
      h('dt', {}, label), h('dd', { class: cls }, value ?? h('span', { class: 'muted' }, '—')));
    meta.replaceChildren(...[
      item('Workflow', h('a', { href: `#/workflows?focus=${seg(inst.workflow)}` }, inst.workflow)),
      item('Queue', inst.queue),
      item('Priority', inst.priority),
      inst.parent_id ? item('Parent', h('a', { class: 'mono', href: `#/instances/${seg(inst.parent_id)}` }, inst.parent_id)) : null,
      item('Created', fmtTime(inst.created_at)),
      item('Started', inst.started_at ? fmtTime(inst.started_at) : null),
      item('Completed', inst.completed_at ? fmtTime(inst.completed_at) : null),
      item('Duration', durationText(), 'duration'),
      item('Current step', inst.current_step),
      item('Progress', progressBar(inst)),
      Number.isFinite(inst.total_steps) ? item('Total steps', String(inst.total_steps)) : null,
    ].filter(Boolean));
    errBox.hidden = !inst.error;
    if (inst.error) {
      errBox.replaceChildren(h('strong', {}, inst.error_type || 'Error'), h('pre', {}, inst.error));
    }
    const done = TERMINAL.has(inst.status);
    cancelBtn.hidden = done;
    resumeBtn.hidden = done;
  }

  function durationText() {
    const start = parseTime(inst.started_at);
    const end = inst.completed_at ? parseTime(inst.completed_at) : (TERMINAL.has(inst.status) ? NaN : Date.now());
    if (Number.isNaN(start) || Number.isNaN(end)) return null;
    return `${fmtDuration(end - start)}${inst.completed_at ? '' : ' (running)'}`;
  }

  function renderIO() {
    inputBox.replaceChildren(jsonPre(inst.input, 'input'));
    outputBox.replaceChildren(jsonPre(inst.output, 'output'));
  }

  function outputCell(t) {
    if (t.output === undefined || (t.output === null && t.status !== 'completed')) {
      return h('td', { class: 'output-cell' }, h('span', { class: 'muted' }, '—'));
    }
    const open = expanded.has(t.key);
    const button = h('button', {
      type: 'button', class: 'out-toggle mono', 'aria-expanded': open ? 'true' : 'false',
      title: open ? 'Collapse' : 'Show the whole output',
    }, compact(t.output, 48));
    const cell = h('td', { class: 'output-cell' }, button, open ? h('pre', { class: 'out-full' }, pretty(t.output)) : null);
    button.addEventListener('click', () => {
      if (expanded.has(t.key)) expanded.delete(t.key); else expanded.add(t.key);
      cell.replaceWith(outputCell(t));
    });
    return cell;
  }

  function stepDuration(t) {
    if (t.duration_ms !== null && t.duration_ms !== undefined) return fmtDuration(t.duration_ms);
    const s = parseTime(t.started_at);
    if (t.completed_at && !Number.isNaN(s)) return fmtDuration(parseTime(t.completed_at) - s);
    if (ACTIVE.has(t.status) && !Number.isNaN(s)) return `${fmtDuration(Date.now() - s)}…`;
    return '—';
  }

  function renderSteps() {
    if (!steps.length) {
      stepsBody.replaceChildren(h('tr', { class: 'empty-row' }, h('td', { colspan: 8 }, 'No steps yet.')));
      return;
    }
    stepsBody.replaceChildren(...steps.map((t) => {
      const started = parseTime(t.started_at);
      return h('tr', { 'data-key': t.key, 'data-status': t.status },
        h('td', { class: 'mono key-cell', title: t.key }, t.key),
        h('td', { class: 'name-cell' }, t.name, t.type && t.type !== 'task' ? h('span', { class: 'tag tag-small' }, t.type) : null),
        h('td', {}, badge(t.status)),
        h('td', { class: 'num' }, t.attempts ?? '—'),
        h('td', { class: 'mono nowrap', title: t.started_at || '' }, Number.isNaN(started) ? '—' : fmtClock(new Date(started))),
        h('td', { class: 'num nowrap' }, stepDuration(t)),
        h('td', { class: 'error-cell' }, t.error ? h('span', { class: 'err-text', title: t.error }, truncate(t.error, 60)) : h('span', { class: 'muted' }, '—')),
        outputCell(t));
    }));
  }

  // Axis steps: round numbers of ms, s, min, h or d.
  const STEPS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5,
    9e5, 18e5, 36e5, 72e5, 108e5, 216e5, 432e5, 864e5];

  function niceStep(span) {
    return STEPS_MS.find((x) => x >= span / 6) || 864e5 * Math.ceil(span / 6 / 864e5);
  }

  function tickLabel(ms, step) {
    if (ms === 0) return '0';
    if (step < 1000) return `${Math.round(ms)} ms`;
    if (step < 60000) return `${Math.round(ms / 1000)} s`;
    if (step < 3600000) return `${Math.round(ms / 60000)} min`;
    if (step < 86400000) return `${Math.round(ms / 3600000)} h`;
    return `${Math.round(ms / 86400000)} d`;
  }

  function renderTimeline() {
    const now = Date.now();
    const items = steps.filter((t) => t.started_at).map((t) => {
      const s = parseTime(t.started_at);
      let e;
      if (t.completed_at) e = parseTime(t.completed_at);
      else if (Number.isFinite(t.duration_ms)) e = s + t.duration_ms;
      else e = ACTIVE.has(t.status) && !TERMINAL.has(inst.status) ? now : s;
      return { t, s, e: Math.max(e, s) };
    }).filter((i) => !Number.isNaN(i.s));
    if (!items.length) {
      timeline.replaceChildren(h('p', { class: 'muted' }, 'No steps have started yet.'));
      return;
    }
    const t0 = Math.min(...items.map((i) => i.s));
    const span = Math.max(1, Math.max(...items.map((i) => i.e)) - t0);
    const step = niceStep(span);
    const ticks = [];
    const grid = [];
    for (let v = 0; v <= span + 1e-9; v += step) {
      const left = `${(v / span) * 100}%`;
      const tick = h('span', { class: 'tl-tick' }, tickLabel(v, step));
      tick.style.left = left;
      ticks.push(tick);
      const line = h('span', { class: 'tl-line' });
      line.style.left = left;
      grid.push(line);
    }
    const rows = items.map(({ t, s, e }) => {
      const bar = h('div', {
        class: `tl-bar tl-${statusCat(t.status)}`,
        title: `${t.name || t.key}: ${fmtDuration(e - s)} (${t.status})`,
        'data-key': t.key,
      }, h('span', { class: 'tl-bar-text' }, fmtDuration(e - s)));
      bar.style.left = `${((s - t0) / span) * 100}%`;
      bar.style.width = `max(3px, ${((e - s) / span) * 100}%)`;
      if ((s - t0) / span > 0.75) bar.classList.add('tl-right');
      return h('div', { class: 'tl-row' },
        h('div', { class: 'tl-label mono', title: t.key }, t.key),
        h('div', { class: 'tl-track' }, bar));
    });
    timeline.replaceChildren(
      h('div', { class: 'tl-row tl-axis' }, h('div', { class: 'tl-label' }), h('div', { class: 'tl-track' }, ticks)),
      h('div', { class: 'tl-body' }, h('div', { class: 'tl-grid' }, grid), rows),
    );
  }

  function updateGraph() {
    if (graphSvg && wf) applyStatuses(graphSvg, wf.graph, steps, inst && inst.status);
  }

  function loadGraph() {
    loadWorkflows().then((wfs) => {
      if (disposed) return;
      wf = wfs.find((w) => w.name === inst.workflow) || null;
      if (!wf || !wf.graph || !Array.isArray(wf.graph.states) || !wf.graph.states.length) {
        graphBox.replaceChildren(h('p', { class: 'muted' }, `No diagram: the workflow "${inst.workflow}" is not registered with this server.`));
        return;
      }
      graphSvg = renderGraph(wf.graph);
      graphBox.replaceChildren(graphSvg);
      updateGraph();
    }).catch((e) => {
      if (!disposed) graphBox.replaceChildren(h('p', { class: 'muted' }, `No diagram: ${e.message}`));
    });
  }

  // ---- data

  let inflight = false;
  let again = false;
  async function refresh() {
    if (inflight) { again = true; return; }
    inflight = true;
    try {
      const [i, s] = await Promise.all([
        api(`api/instances/${seg(id)}`),
        api(`api/instances/${seg(id)}/steps`),
      ]);
      if (disposed) return;
      const first = !inst;
      inst = i;
      steps = (s && s.steps) || [];
      pageError.hidden = true;
      renderHeader();
      renderIO();
      renderSteps();
      renderTimeline();
      updateGraph();
      if (first) {
        document.title = `${id} · durable`;
        loadGraph();
        openEvents();
      }
    } catch (e) {
      if (disposed) return;
      if (e.status === 404 && !inst) {
        setLive('idle');
        root.replaceChildren(h('div', { class: 'card empty' },
          h('h1', {}, 'Instance not found'),
          h('p', {}, 'There is no instance with the id ', h('code', {}, id), '. '),
          h('a', { href: '#/' }, '← Back to the instances')));
        disposed = true;
        return;
      }
      pageError.hidden = false;
      pageError.textContent = `Could not load the instance: ${e.message}`;
    } finally {
      inflight = false;
      if (again && !disposed) { again = false; refresh(); }
    }
  }
  const refreshSoon = debounce(refresh, 100);

  function addEvent(name, d, eid) {
    const box = events;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    const rest = { ...d };
    for (const k of ['id', 'name', 'instance_id', 'workflow_name', 'step_name']) delete rest[k];
    const cat = name.endsWith('.failed') ? 'bad' : name.endsWith('.completed') ? 'ok'
      : name.endsWith('.retry') ? 'wait' : name.endsWith('.cancelled') ? 'cancel' : 'run';
    box.append(h('div', { class: `event ev-${cat}`, 'data-name': name, 'data-id': eid ?? '' },
      h('span', { class: 'ev-time' }, fmtClock()),
      h('span', { class: 'ev-id' }, eid ? `#${eid}` : ''),
      h('span', { class: 'ev-name' }, name),
      h('span', { class: 'ev-step' }, d.step_name || ''),
      h('span', { class: 'ev-data' }, Object.keys(rest).length ? compact(rest, 600) : '')));
    while (box.childElementCount > MAX_EVENTS) box.firstElementChild.remove();
    eventCount.textContent = `${seen.size} event${seen.size === 1 ? '' : 's'}`;
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  function openEvents() {
    if (es) es.close();
    ended = false;
    es = openStream(`api/instances/${seg(id)}/events`, {
      onEvent(name, d, ev) {
        if (disposed) return;
        const eid = ev.lastEventId || (d.id !== undefined ? String(d.id) : '');
        if (eid) {
          if (seen.has(eid)) return;
          seen.add(eid);
        }
        addEvent(name, d, eid);
        refreshSoon();
      },
      onState(state) {
        if (disposed) return;
        if (state === 'closed' && (ended || (inst && TERMINAL.has(inst.status)))) setLive('ended');
        else setLive(state);
      },
      onEnd() {
        ended = true;
        if (!events.childElementCount) events.append(h('p', { class: 'events-none' }, 'No events recorded.'));
        refreshSoon();
      },
    });
  }

  // ---- actions

  const say = (el, text, bad = false) => {
    el.textContent = text;
    el.classList.toggle('bad', bad);
  };

  cancelBtn.addEventListener('click', async () => {
    if (!window.confirm(`Cancel instance ${id}?`)) return;
    cancelBtn.disabled = true;
    try {
      const r = await api(`api/instances/${seg(id)}/cancel`, { method: 'POST', body: {} });
      say(actionResult, r && r.cancelled ? 'Cancelled.' : 'Not cancelled: the instance has already ended.');
      refreshSoon();
    } catch (e) {
      say(actionResult, `Cancel failed: ${e.message}`, true);
    } finally {
      cancelBtn.disabled = false;
    }
  });

  resumeBtn.addEventListener('click', async () => {
    resumeBtn.disabled = true;
    try {
      const r = await api(`api/instances/${seg(id)}/resume`, { method: 'POST', body: {} });
      say(actionResult, r && r.resumed ? 'Resumed: the instance is back in its queue.'
        : 'Not resumed: it has ended, waits in its queue already, or a live engine runs it.');
      if (r && r.resumed && (ended || !es || es.readyState === EventSource.CLOSED)) openEvents();
      refreshSoon();
    } catch (e) {
      say(actionResult, `Resume failed: ${e.message}`, true);
    } finally {
      resumeBtn.disabled = false;
    }
  });

  sigForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = sigName.value.trim();
    if (!name) { say(sigResult, 'A signal needs a name.', true); return; }
    let payload = null;
    if (sigPayload.value.trim()) {
      try { payload = JSON.parse(sigPayload.value); } catch (e) {
        say(sigResult, `Invalid JSON payload: ${e.message}`, true);
        return;
      }
    }
    sigSend.disabled = true;
    try {
      const r = await api(`api/instances/${seg(id)}/signal`, { method: 'POST', body: { name, payload } });
      say(sigResult, `sent (seq ${r && r.seq !== undefined ? r.seq : '?'})`);
    } catch (e) {
      say(sigResult, e.status ? `Error ${e.status}: ${e.message}` : e.message, true);
    } finally {
      sigSend.disabled = false;
    }
  });

  // Running steps and durations tick.
  const ticker = setInterval(() => {
    if (!inst || TERMINAL.has(inst.status)) return;
    const dd = meta.querySelector('dd.duration');
    const text = durationText();
    if (dd && text) dd.textContent = text;
    if (steps.some((t) => ACTIVE.has(t.status))) {
      renderTimeline();
      for (const tr of stepsBody.querySelectorAll('tr[data-key]')) {
        const t = steps.find((x) => x.key === tr.dataset.key);
        if (t && ACTIVE.has(t.status)) tr.children[5].textContent = stepDuration(t);
      }
    }
  }, 1000);

  setLive('connecting');
  refresh();

  return {
    title: id,
    cleanup() {
      disposed = true;
      clearInterval(ticker);
      refreshSoon.cancel();
      if (es) es.close();
    },
  };
}
