// instances.js: the instance list page (#/): a filterable table of instances,
// newest first, kept live by the all-instances event stream (api/events).
import {
  h, api, seg, badge, openStream, setLive, fmtAge, fmtTime, parseTime, statusCat, STATUSES,
} from './util.js';
import { loadWorkflows } from './workflows.js';

const PAGE = 200;
const AUTO_PAGES = 5; // pages fetched at once (the API lists oldest first)

/** A progress bar cell for an instance (or a dash when it has no progress). */
export function progressBar(inst) {
  let p = inst.progress;
  if ((p === null || p === undefined) && inst.status === 'completed') p = 100;
  if (p === null || p === undefined || Number.isNaN(Number(p))) return h('span', { class: 'muted' }, '—');
  p = Math.max(0, Math.min(100, Math.round(Number(p))));
  const fill = h('div', { class: 'progress-fill' });
  fill.style.width = `${p}%`;
  return h('div', { class: 'progress-wrap' },
    h('div', {
      class: `progress progress-${statusCat(inst.status)}`, role: 'progressbar',
      'aria-valuenow': p, 'aria-valuemin': 0, 'aria-valuemax': 100,
    }, fill),
    h('span', { class: 'progress-text' }, `${p}%`));
}

/** Applies a live event to an instance summary (in place). */
export function applyEvent(inst, name, d) {
  const now = new Date().toISOString();
  switch (name) {
    case 'workflow.started':
      inst.status = 'running';
      inst.started_at = inst.started_at || now;
      break;
    case 'workflow.completed':
      inst.status = 'completed';
      inst.progress = 100;
      inst.completed_at = inst.completed_at || now;
      break;
    case 'workflow.failed':
      inst.status = d.status || 'failed';
      inst.completed_at = inst.completed_at || now;
      if (d.error) inst.error = d.error;
      break;
    case 'workflow.cancelled':
      inst.status = 'cancelled';
      inst.completed_at = inst.completed_at || now;
      break;
    case 'workflow.step.started':
    case 'workflow.step.retry':
      if (!inst.status || inst.status === 'pending' || inst.status === 'sleeping' || inst.status === 'waiting') {
        inst.status = 'running';
      }
      break;
    default:
      break;
  }
  if (name.startsWith('workflow.step.') && d.step_name) inst.current_step = d.step_name;
  if (d.current_step) inst.current_step = d.current_step;
  if (typeof d.progress === 'number') inst.progress = d.progress;
  else if (typeof d.completed_steps === 'number' && d.total_steps) {
    inst.progress = Math.round((100 * d.completed_steps) / d.total_steps);
  }
}

export function instancesPage(root, params) {
  const filters = {
    workflow: params.get('workflow') || '',
    status: params.get('status') || '',
    q: params.get('q') || '',
  };
  const rows = new Map(); // id -> {inst, tr}
  const fetching = new Map(); // id -> events seen while its summary is fetched
  let cursor = null;
  let generation = 0;
  let es = null;
  let disposed = false;

  const option = (value, label) => h('option', { value }, label);
  const wfSelect = h('select', { id: 'filter-workflow', 'aria-label': 'Workflow' }, option('', 'All workflows'));
  if (filters.workflow) wfSelect.append(option(filters.workflow, filters.workflow));
  wfSelect.value = filters.workflow;
  const stSelect = h('select', { id: 'filter-status', 'aria-label': 'Status' },
    option('', 'All statuses'), STATUSES.map((s) => option(s, s)));
  if (filters.status && !STATUSES.includes(filters.status)) stSelect.append(option(filters.status, filters.status));
  stSelect.value = filters.status;
  const search = h('input', {
    id: 'filter-id', type: 'search', placeholder: 'Filter by id…', value: filters.q,
    'aria-label': 'Filter by id', autocomplete: 'off', spellcheck: 'false',
  });
  const count = h('span', { class: 'count' });
  const errorBox = h('div', { class: 'alert alert-error', role: 'alert', hidden: true });
  const tbody = h('tbody');
  const table = h('table', { id: 'instances', class: 'table' },
    h('thead', {}, h('tr', {},
      ['Status', 'ID', 'Workflow', 'Current step', 'Progress', 'Age', 'Queue'].map((t) => h('th', {}, t)))),
    tbody);
  const more = h('button', { class: 'btn', type: 'button', hidden: true }, 'Load newer instances');
  const moreNote = h('span', { class: 'muted' });

  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Instances'), count),
    h('div', { class: 'toolbar' }, wfSelect, stSelect, search),
    errorBox,
    h('div', { class: 'card table-card' }, table),
    h('div', { class: 'more', hidden: false }, more, moreNote),
  );

  loadWorkflows().then((wfs) => {
    if (disposed) return;
    for (const w of wfs) {
      if (w.name !== filters.workflow) wfSelect.append(option(w.name, w.name));
    }
    wfSelect.value = filters.workflow;
  }).catch(() => {});

  const syncHash = () => {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) p.set(k, v);
    const q = p.toString();
    history.replaceState(null, '', `#/${q ? `?${q}` : ''}`);
  };

  wfSelect.addEventListener('change', () => {
    filters.workflow = wfSelect.value;
    syncHash();
    openEvents();
    load();
  });
  stSelect.addEventListener('change', () => {
    filters.status = stSelect.value;
    syncHash();
    load();
  });
  search.addEventListener('input', () => {
    filters.q = search.value.trim();
    syncHash();
    render();
  });
  more.addEventListener('click', () => loadPages(generation, cursor));

  const matches = (inst) => (!filters.workflow || inst.workflow === filters.workflow)
    && (!filters.status || inst.status === filters.status)
    && (!filters.q || String(inst.id).toLowerCase().includes(filters.q.toLowerCase()));

  function fill(tr, inst) {
    const created = parseTime(inst.created_at);
    const status = badge(inst.status);
    if (inst.error) status.title = `${inst.error_type ? `${inst.error_type}: ` : ''}${inst.error}`;
    tr.dataset.status = inst.status;
    tr.replaceChildren(
      h('td', {}, status),
      h('td', { class: 'mono id-cell' }, h('a', { href: `#/instances/${seg(inst.id)}`, title: inst.id }, inst.id)),
      h('td', {}, inst.workflow),
      h('td', { class: 'step-cell' }, inst.current_step ?? h('span', { class: 'muted' }, '—')),
      h('td', { class: 'progress-cell' }, progressBar(inst)),
      h('td', { class: 'age', 'data-created': inst.created_at || '', title: fmtTime(inst.created_at) },
        fmtAge(Date.now() - created)),
      h('td', {}, inst.queue ?? h('span', { class: 'muted' }, '—')),
    );
  }

  function upsert(inst, replace = true) {
    const row = rows.get(inst.id);
    if (row) {
      if (!replace) return;
      row.inst = inst;
      fill(row.tr, inst);
    } else {
      const tr = h('tr', { 'data-id': inst.id });
      fill(tr, inst);
      rows.set(inst.id, { inst, tr });
    }
  }

  function render() {
    const all = [...rows.values()];
    const shown = all.filter((r) => matches(r.inst));
    shown.sort((a, b) => (parseTime(b.inst.created_at) || 0) - (parseTime(a.inst.created_at) || 0)
      || String(b.inst.id).localeCompare(String(a.inst.id)));
    if (!shown.length) {
      const text = all.length ? 'No instances match the filters.' : 'No instances yet. Start one from the Workflows page.';
      tbody.replaceChildren(h('tr', { class: 'empty-row' }, h('td', { colspan: 7 }, text)));
    } else {
      tbody.replaceChildren(...shown.map((r) => r.tr));
    }
    count.textContent = shown.length === all.length ? `${all.length} shown` : `${shown.length} of ${all.length} shown`;
  }

  function showError(e) {
    errorBox.hidden = !e;
    errorBox.textContent = e ? `Could not load the instances: ${e.message}` : '';
  }

  function query(after) {
    const p = new URLSearchParams({ limit: String(PAGE) });
    if (filters.workflow) p.set('workflow', filters.workflow);
    if (filters.status) p.set('status', filters.status);
    if (after) p.set('cursor', after);
    return p.toString();
  }

  async function loadPages(gen, after) {
    more.disabled = true;
    try {
      let pages = 0;
      let next = after;
      do {
        const r = await api(`api/instances?${query(next)}`);
        if (gen !== generation || disposed) return;
        for (const inst of r.instances || []) upsert(inst, false);
        next = r.next_cursor || null;
        pages += 1;
      } while (next && pages < AUTO_PAGES);
      cursor = next;
      more.hidden = !cursor;
      moreNote.textContent = cursor ? ' The list is paged oldest first: newer instances are not loaded yet.' : '';
      showError(null);
      render();
    } catch (e) {
      if (gen === generation && !disposed) {
        showError(e);
        if (!rows.size) tbody.replaceChildren();
      }
    } finally {
      more.disabled = false;
    }
  }

  function load() {
    generation += 1;
    rows.clear();
    cursor = null;
    more.hidden = true;
    moreNote.textContent = '';
    tbody.replaceChildren(h('tr', { class: 'empty-row' }, h('td', { colspan: 7 }, 'Loading…')));
    return loadPages(generation, null);
  }

  function fetchOne(id, name, d) {
    if (fetching.has(id)) {
      fetching.get(id).push([name, d]);
      return;
    }
    fetching.set(id, []);
    const gen = generation;
    api(`api/instances/${seg(id)}`).then((inst) => {
      if (disposed || gen !== generation) return;
      for (const [n, data] of fetching.get(id) || []) applyEvent(inst, n, data);
      upsert(inst);
      render();
    }).catch(() => {}).finally(() => fetching.delete(id));
  }

  function onEvent(name, d) {
    const id = d.instance_id;
    if (!id) return;
    const row = rows.get(id);
    if (!row) {
      if (!filters.workflow || !d.workflow_name || d.workflow_name === filters.workflow) fetchOne(id, name, d);
      return;
    }
    const before = row.inst.status;
    applyEvent(row.inst, name, d);
    fill(row.tr, row.inst);
    if (before !== row.inst.status && filters.status) render();
  }

  function openEvents() {
    if (es) es.close();
    const q = filters.workflow ? `?workflow=${seg(filters.workflow)}` : '';
    es = openStream(`api/events${q}`, { onEvent, onState: (s) => { if (!disposed) setLive(s); } });
  }

  // Ages tick every few seconds.
  const ticker = setInterval(() => {
    const now = Date.now();
    for (const td of tbody.querySelectorAll('td.age')) {
      const t = parseTime(td.dataset.created);
      td.textContent = fmtAge(now - t);
    }
  }, 3000);

  openEvents(); // first, so that no event falls between the listing and the stream
  load();

  return {
    title: 'Instances',
    cleanup() {
      disposed = true;
      clearInterval(ticker);
      if (es) es.close();
    },
  };
}
