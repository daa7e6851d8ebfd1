// workflows.js: the workflows page (#/workflows): a card per registered workflow
// with its diagram and a start form built from its input JSON Schema.
import { h, api, seg, pretty } from './util.js';
import { renderGraph } from './graph.js';

let cache = null;

/** The registered workflows (api/workflows), fetched once per page view unless forced. */
export function loadWorkflows(force = false) {
  if (!cache || force) {
    cache = api('api/workflows').then((r) => (r && r.workflows) || []);
    cache.catch(() => { cache = null; });
  }
  return cache;
}

export function workflowsPage(root) {
  const count = h('span', { class: 'count' });
  const list = h('div', { class: 'wf-list' }, h('p', { class: 'muted' }, 'Loading…'));
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Workflows'), count), list);
  loadWorkflows(true).then((wfs) => {
    count.textContent = `${wfs.length} registered`;
    list.replaceChildren(...(wfs.length ? wfs.map(card)
      : [h('div', { class: 'card empty' }, 'No workflows are registered with this server.')]));
    if (location.hash.includes('?focus=')) {
      const name = new URLSearchParams(location.hash.split('?')[1]).get('focus');
      const el = document.getElementById(`wf-${name}`);
      if (el) el.scrollIntoView();
    }
  }).catch((e) => {
    list.replaceChildren(h('div', { class: 'alert alert-error', role: 'alert' }, `Could not load the workflows: ${e.message}`));
  });
  return { title: 'Workflows', cleanup() {} };
}

function card(w) {
  const tag = (text, cls = '') => h('span', { class: `tag ${cls}` }, text);
  const head = h('div', { class: 'wf-head' },
    h('h2', {}, w.name),
    tag(w.kind === 'graph' ? 'graph' : 'function', 'tag-kind'),
    w.queue ? tag(`queue: ${w.queue}`) : null,
    Number.isFinite(w.total_steps) ? tag(`${w.total_steps} step${w.total_steps === 1 ? '' : 's'}`) : null,
    h('a', { class: 'wf-link', href: `#/?workflow=${seg(w.name)}` }, 'Instances →'));
  const diagram = h('div', { class: 'graph-box static' },
    w.graph && Array.isArray(w.graph.states) && w.graph.states.length
      ? renderGraph(w.graph) : h('p', { class: 'muted' }, 'No diagram.'));
  const mermaid = w.mermaid
    ? h('details', { class: 'mermaid' }, h('summary', {}, 'Mermaid source'), h('pre', { class: 'code' }, w.mermaid))
    : null;
  return h('section', { class: 'card wf-card', id: `wf-${w.name}`, 'data-workflow': w.name },
    head,
    w.doc ? h('p', { class: 'wf-doc' }, w.doc) : null,
    h('div', { class: 'wf-body' },
      h('div', { class: 'wf-diagram' }, diagram, mermaid),
      h('div', { class: 'wf-form' }, h('h3', {}, 'Start an instance'), startForm(w))));
}

// ------------------------------------------------------------------ the form

/** A schema without its Optional wrapper (anyOf [X, null] or type [X, "null"]). */
function unwrap(s) {
  if (!s || typeof s !== 'object') return {};
  const alts = s.anyOf || s.oneOf;
  if (Array.isArray(alts)) {
    const rest = alts.filter((a) => !(a && a.type === 'null'));
    if (rest.length === 1) return { ...s, ...rest[0], anyOf: undefined, oneOf: undefined, nullable: true };
  }
  if (Array.isArray(s.type)) {
    const rest = s.type.filter((t) => t !== 'null');
    if (rest.length === 1) return { ...s, type: rest[0], nullable: true };
  }
  return s;
}

function kindOf(s) {
  if (Array.isArray(s.enum) && s.enum.length) return 'enum';
  switch (s.type) {
    case 'string': return 'string';
    case 'integer': return 'integer';
    case 'number': return 'number';
    case 'boolean': return 'boolean';
    default: return 'json';
  }
}

let fieldSeq = 0;

function makeField(name, schema, required) {
  const s = unwrap(schema);
  const kind = kindOf(s);
  const id = `field-${++fieldSeq}`;
  const hasDefault = s.default !== undefined;
  let input;
  if (kind === 'enum') {
    input = h('select', { id, name },
      (!required || !hasDefault) ? h('option', { value: '' }, required ? 'Choose…' : '—') : null,
      s.enum.map((v, i) => h('option', { value: String(i) }, typeof v === 'string' ? v : JSON.stringify(v))));
    const i = hasDefault ? s.enum.findIndex((v) => JSON.stringify(v) === JSON.stringify(s.default)) : -1;
    input.value = i >= 0 ? String(i) : '';
  } else if (kind === 'boolean') {
    input = h('input', { id, name, type: 'checkbox', checked: s.default === true });
  } else if (kind === 'integer' || kind === 'number') {
    input = h('input', {
      id, name, type: 'number', step: kind === 'integer' ? '1' : 'any',
      min: s.minimum, max: s.maximum, value: hasDefault ? String(s.default) : '',
    });
  } else if (kind === 'string') {
    input = h('input', {
      id, name, type: 'text', autocomplete: 'off', spellcheck: 'false',
      placeholder: s.examples && s.examples.length ? String(s.examples[0]) : (s.format || ''),
      value: hasDefault && s.default !== null ? String(s.default) : '',
    });
  } else {
    input = h('textarea', {
      id, name, rows: 3, class: 'json', spellcheck: 'false',
      placeholder: s.type === 'array' ? 'JSON, e.g. [1, 2]' : s.type === 'object' ? 'JSON, e.g. {"key": "value"}' : 'JSON value',
      value: hasDefault && s.default !== null ? pretty(s.default) : '',
    });
  }
  const hints = [];
  if (s.description) hints.push(s.description);
  if (kind === 'string' && s.pattern) hints.push(`pattern: ${s.pattern}`);
  if (kind === 'string' && s.format) hints.push(`format: ${s.format}`);
  if (kind === 'json') hints.push(s.type ? `JSON ${s.type}` : 'any JSON');
  const error = h('div', { class: 'field-error', 'data-field': name, role: 'alert' });
  const label = h('label', { for: id }, s.title || name, required ? h('span', { class: 'req', title: 'required' }, ' *') : null);
  const el = kind === 'boolean'
    ? h('div', { class: 'field field-check', 'data-field': name },
      h('label', { class: 'check' }, input, ' ', s.title || name), hints.length ? h('div', { class: 'hint' }, hints.join(' · ')) : null, error)
    : h('div', { class: 'field', 'data-field': name }, label, input,
      hints.length ? h('div', { class: 'hint' }, hints.join(' · ')) : null, error);
  return { name, kind, schema: s, required, input, error, el };
}

/** {has, value} of a field, or {error}. Empty optional fields are left out. */
function readField(f) {
  const v = f.input.value;
  switch (f.kind) {
    case 'boolean': return { has: true, value: f.input.checked };
    case 'enum': return v === '' ? { has: false } : { has: true, value: f.schema.enum[Number(v)] };
    case 'integer':
    case 'number': {
      if (v.trim() === '') return { has: false };
      const n = Number(v);
      if (!Number.isFinite(n)) return { error: 'Not a number' };
      if (f.kind === 'integer' && !Number.isInteger(n)) return { error: 'Must be a whole number' };
      return { has: true, value: n };
    }
    case 'string': return v === '' ? { has: false } : { has: true, value: v };
    default:
      if (v.trim() === '') return { has: false };
      try { return { has: true, value: JSON.parse(v) }; } catch (e) { return { error: `Invalid JSON: ${e.message}` }; }
  }
}

function writeField(f, value) {
  switch (f.kind) {
    case 'boolean': f.input.checked = value === true; break;
    case 'enum': {
      const i = value === undefined ? -1 : f.schema.enum.findIndex((x) => JSON.stringify(x) === JSON.stringify(value));
      f.input.value = i >= 0 ? String(i) : '';
      break;
    }
    case 'integer':
    case 'number':
    case 'string': f.input.value = value === undefined || value === null ? '' : String(value); break;
    default: f.input.value = value === undefined ? '' : pretty(value);
  }
}

function setError(box, message) {
  box.textContent = message || '';
  const field = box.closest('.field');
  if (field) {
    field.classList.toggle('invalid', !!message);
    const input = field.querySelector('input, select, textarea');
    if (input) input.setAttribute('aria-invalid', message ? 'true' : 'false');
  }
}

function startForm(w) {
  const schema = w.input_schema || {};
  const props = w.kind !== 'graph' && schema && typeof schema.properties === 'object' ? schema.properties : null;
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const fields = props ? Object.entries(props).map(([name, s]) => makeField(name, s, required.has(name))) : [];
  const byName = new Map(fields.map((f) => [f.name, f]));

  const rawId = `field-${++fieldSeq}`;
  const raw = h('textarea', {
    id: rawId, name: props ? '_raw' : 'input', rows: props ? 8 : 6, class: 'json', spellcheck: 'false',
    value: props ? '' : '{}', placeholder: '{"key": "value"}',
  });
  const rawError = h('div', { class: 'field-error', 'data-field': 'input', role: 'alert' });
  const rawBox = h('div', { class: 'field' }, h('label', { for: rawId }, props ? 'Input (JSON object)' : 'Input (any JSON)'), raw, rawError);
  const fieldsBox = h('div', { class: 'fields' }, fields.map((f) => f.el));
  if (props && !fields.length) fieldsBox.append(h('p', { class: 'muted' }, 'This workflow takes no parameters.'));

  let rawMode = !props;
  rawBox.hidden = !rawMode;
  fieldsBox.hidden = rawMode;

  const collect = () => {
    const input = {};
    let ok = true;
    for (const f of fields) {
      const r = readField(f);
      setError(f.error, r.error);
      if (r.error) ok = false;
      else if (r.has) input[f.name] = r.value;
    }
    return ok ? input : null;
  };

  const toggle = h('input', { type: 'checkbox', class: 'raw-toggle', name: '_raw_mode' });
  toggle.addEventListener('change', () => {
    if (toggle.checked) {
      const input = collect();
      if (input === null) { toggle.checked = false; return; }
      raw.value = pretty(input);
    } else {
      let value;
      try { value = raw.value.trim() ? JSON.parse(raw.value) : {}; } catch (e) {
        setError(rawError, `Invalid JSON: ${e.message}`);
        toggle.checked = true;
        return;
      }
      if (!value || typeof value !== 'object' || Array.isArray(value)) {
        setError(rawError, 'The input must be a JSON object to edit it as fields.');
        toggle.checked = true;
        return;
      }
      for (const f of fields) writeField(f, value[f.name]);
    }
    setError(rawError, '');
    rawMode = toggle.checked;
    rawBox.hidden = !rawMode;
    fieldsBox.hidden = rawMode;
  });

  const optId = h('input', { type: 'text', name: '_id', placeholder: 'generated', autocomplete: 'off', spellcheck: 'false' });
  const optQueue = h('input', { type: 'text', name: '_queue', placeholder: w.queue || 'default', autocomplete: 'off' });
  const optPriority = h('input', { type: 'number', name: '_priority', step: '1', placeholder: '0' });
  const options = h('details', { class: 'options' }, h('summary', {}, 'Options (id, queue, priority)'),
    h('div', { class: 'options-grid' },
      h('label', {}, 'Instance id', optId),
      h('label', {}, 'Queue', optQueue),
      h('label', {}, 'Priority', optPriority)));

  const formError = h('div', { class: 'form-error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Start');
  const form = h('form', { id: `start-form-${w.name}`, class: 'start-form', novalidate: true, 'data-workflow': w.name },
    fieldsBox, rawBox, options,
    h('div', { class: 'form-actions' },
      submit,
      props ? h('label', { class: 'check raw-label' }, toggle, ' Raw JSON') : null),
    formError);

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    formError.textContent = '';
    setError(rawError, '');
    for (const f of fields) setError(f.error, '');
    let input;
    if (rawMode) {
      const text = raw.value.trim();
      if (!text) input = props ? {} : null;
      else {
        try { input = JSON.parse(text); } catch (e) {
          setError(rawError, `Invalid JSON: ${e.message}`);
          return;
        }
      }
    } else {
      input = collect();
      if (input === null) return;
    }
    const body = { input };
    if (optId.value.trim()) body.id = optId.value.trim();
    if (optQueue.value.trim()) body.queue = optQueue.value.trim();
    if (optPriority.value.trim()) {
      const p = Number(optPriority.value);
      if (!Number.isInteger(p)) { formError.textContent = 'Priority must be a whole number.'; return; }
      body.priority = p;
    }
    submit.disabled = true;
    submit.textContent = 'Starting…';
    try {
      const r = await api(`api/workflows/${seg(w.name)}/instances`, { method: 'POST', body });
      location.hash = `#/instances/${seg(r.id)}`;
    } catch (e) {
      showErrors(e);
    } finally {
      submit.disabled = false;
      submit.textContent = 'Start';
    }
  });

  function showErrors(e) {
    if (e.status === 422 && Array.isArray(e.detail)) {
      const general = [];
      for (const d of e.detail) {
        const loc = Array.isArray(d && d.loc) ? d.loc.map(String) : [];
        const msg = (d && d.msg) || JSON.stringify(d);
        const at = loc.indexOf('input');
        const name = at >= 0 ? loc[at + 1] : loc.find((p) => byName.has(p));
        const f = !rawMode && name !== undefined ? byName.get(name) : undefined;
        if (f) setError(f.error, f.error.textContent ? `${f.error.textContent}; ${msg}` : msg);
        else if (at >= 0 && rawMode) setError(rawError, (rawError.textContent ? `${rawError.textContent}; ` : '') + (loc.length > at + 1 ? `${loc.slice(at + 1).join('.')}: ` : '') + msg);
        else general.push((loc.filter((p) => p !== 'body').join('.') ? `${loc.filter((p) => p !== 'body').join('.')}: ` : '') + msg);
      }
      formError.textContent = general.join('\n');
      const first = form.querySelector('.field.invalid input, .field.invalid select, .field.invalid textarea');
      if (first) first.focus();
    } else {
      formError.textContent = e.status ? `Error ${e.status}: ${e.message}` : e.message;
    }
  }

  return form;
}
