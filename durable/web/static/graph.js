// graph.js: draws a workflow graph (the API's graph JSON) as an SVG diagram with
// a small layered layout, top to bottom, and colours its states by live status.
// Parallel and map states are boxes holding their branches side by side.
// Every state node is a <g class="node" data-state="<name>" data-status="<status>">.
import { svg, ACTIVE, TERMINAL } from './util.js';

const NODE_H = 40;        // a one-line node
const NODE_H2 = 52;       // a node with a second, smaller line
const MIN_W = 116;
const PAD_X = 14;
const GAP_X = 28;
const GAP_Y = 46;
const BOX_PAD = 14;       // inside a parallel/map box
const BOX_HEAD = 30;      // a box's title row
const BRANCH_HEAD = 20;   // a branch's name row
const MAX_LABEL = 32;
let uid = 0;

const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif';
let measureCtx = null;

/** The width of text in the diagram's font (an estimate without a canvas). */
function textW(text, size = 13, weight = 500) {
  if (measureCtx === null) {
    try { measureCtx = document.createElement('canvas').getContext('2d') || false; } catch { measureCtx = false; }
  }
  if (!measureCtx) return text.length * size * 0.6;
  measureCtx.font = `${weight} ${size}px ${FONT}`;
  return measureCtx.measureText(text).width;
}

const firstLine = (s) => String(s ?? '').split('\n')[0];
const cut = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const sum = (xs) => xs.reduce((a, b) => a + b, 0);

/** A branch's name cut to fit `maxW` pixels as .branch-title draws it (11px, 600, uppercase, .04em apart). */
function fitBranchTitle(text, maxW) {
  const width = (t) => textW(t.toUpperCase(), 11, 600) + 0.44 * t.length;
  let t = firstLine(text);
  if (width(t) <= maxW) return t;
  while (t.length > 1 && width(`${t}…`) > maxW) t = t.slice(0, -1);
  return `${t}…`;
}

/** The edges out of a state: {to, kind: next|choice|default|catch, label}. */
export function edgesOf(st) {
  const out = [];
  if (!st) return out;
  (st.choices || []).forEach((c, i) => out.push({ to: c.next, kind: 'choice', label: c.label || `#${i + 1}` }));
  if (st.default) out.push({ to: st.default, kind: 'default', label: 'default' });
  if (st.next) out.push({ to: st.next, kind: 'next', label: null });
  for (const c of st.catch || []) {
    out.push({ to: c.next, kind: 'catch', label: `catch ${(c.errors || []).join(', ') || '*'}` });
  }
  return out;
}

const subgraphsOf = (st) => (st.type === 'parallel' ? (st.branches || [])
  : st.type === 'map' && st.iterator ? [st.iterator] : []);

function subText(st) {
  switch (st.type) {
    case 'task': return st.queue ? `queue: ${st.queue}` : '';
    case 'choice': return 'choice';
    case 'pass': return '';
    case 'wait': return 'wait';
    case 'signal': return `signal: ${st.signal ?? ''}`;
    case 'workflow': return `child workflow: ${st.workflow ?? ''}`;
    default: return st.type || '';
  }
}

// ------------------------------------------------------------------ layout

/** Sizes and positions (relative to the graph's top left) of a graph's states. */
function layout(g) {
  const states = (g && g.states) || [];
  const byName = new Map(states.map((s) => [s.name, s]));
  const order = new Map(states.map((s, i) => [s.name, i]));

  // Back edges: the edges closing a cycle in a depth-first walk from the start.
  const mark = new Map();
  const back = new Set();
  const post = [];
  const visit = (name) => {
    mark.set(name, 1);
    edgesOf(byName.get(name)).forEach((e, i) => {
      if (!byName.has(e.to)) return;
      const m = mark.get(e.to);
      if (m === 1) back.add(`${name}\u0000${i}`);
      else if (!m) visit(e.to);
    });
    mark.set(name, 2);
    post.push(name);
  };
  states.forEach((s) => { if (!mark.has(s.name)) visit(s.name); });

  // Layers: the longest path from the start over the forward edges.
  const edges = [];
  const layerOf = new Map(states.map((s) => [s.name, 0]));
  for (const name of post.reverse()) {
    edgesOf(byName.get(name)).forEach((e, i) => {
      if (!byName.has(e.to)) return;
      const isBack = back.has(`${name}\u0000${i}`);
      edges.push({ ...e, from: name, back: isBack });
      if (!isBack) layerOf.set(e.to, Math.max(layerOf.get(e.to), layerOf.get(name) + 1));
    });
  }

  const nodes = states.map((st) => {
    const n = { st, layer: layerOf.get(st.name) };
    const subs = subgraphsOf(st);
    if (subs.length) {
      n.inner = subs.map((b) => ({ lay: layout(b), title: st.type === 'parallel' ? (b.name || '') : '' }));
      n.title = cut(firstLine(st.label || st.name), MAX_LABEL);
      n.tag = st.type === 'map' ? 'map: for each item' : `parallel: ${subs.length} branches`;
      const innerW = sum(n.inner.map((i) => i.lay.w)) + GAP_X * (n.inner.length - 1);
      const innerH = Math.max(...n.inner.map((i) => i.lay.h + (i.title ? BRANCH_HEAD : 0)));
      n.w = Math.max(innerW + 2 * BOX_PAD, textW(n.title, 13, 600) + textW(n.tag, 11, 600) + 3 * PAD_X);
      n.h = BOX_HEAD + innerH + BOX_PAD;
    } else {
      n.label = cut(firstLine(st.label || st.name), MAX_LABEL);
      n.sub = cut(subText(st), MAX_LABEL + 6);
      n.w = Math.ceil(Math.max(MIN_W, textW(n.label) + 2 * PAD_X, textW(n.sub, 11, 400) + 2 * PAD_X)
        + (st.type === 'choice' ? 24 : 0));
      n.h = n.sub ? NODE_H2 : NODE_H;
    }
    return n;
  });
  const nodeOf = new Map(nodes.map((n) => [n.st.name, n]));

  const layers = [];
  for (const n of nodes) (layers[n.layer] ||= []).push(n);
  const rows = layers.filter(Boolean);
  const rowW = rows.map((ns) => sum(ns.map((n) => n.w)) + GAP_X * (ns.length - 1));
  const contentW = Math.max(0, ...rowW);
  const preds = new Map();
  for (const e of edges) if (!e.back) (preds.get(e.to) || preds.set(e.to, []).get(e.to)).push(e.from);

  let y = 0;
  rows.forEach((ns, r) => {
    if (r > 0) {
      // Order a layer by the mean position of its predecessors (fewer crossings).
      const key = (n) => {
        const ps = (preds.get(n.st.name) || []).map((p) => nodeOf.get(p)).filter((p) => p && p.x !== undefined);
        return ps.length ? sum(ps.map((p) => p.x + p.w / 2)) / ps.length : Infinity;
      };
      ns.sort((a, b) => key(a) - key(b) || order.get(a.st.name) - order.get(b.st.name));
    }
    const rowH = Math.max(...ns.map((n) => n.h));
    let x = (contentW - rowW[r]) / 2;
    for (const n of ns) {
      n.x = x;
      n.y = y + (rowH - n.h) / 2;
      x += n.w + GAP_X;
    }
    y += rowH + GAP_Y;
  });

  // Back edges run up in lanes right of the drawing, with room for their labels.
  const backs = edges.filter((e) => e.back);
  const labelRoom = Math.max(0, ...backs.map((e) => (e.label ? labelW(e.label) / 2 : 0)));
  const laneX = contentW + 10 + labelRoom;
  const laneW = backs.length ? laneX - contentW + 14 * backs.length + labelRoom + 4 : 0;
  return { nodes, nodeOf, edges, contentW, laneX, w: contentW + laneW, h: Math.max(0, y - GAP_Y) };
}

// ------------------------------------------------------------------ drawing

function defs(id) {
  const marker = (name) => svg('marker', {
    id: `${id}-${name}`, viewBox: '0 0 10 10', refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse', class: `arrow arrow-${name}`,
  }, svg('path', { d: 'M0,0 L10,5 L0,10 z' }));
  return svg('defs', {}, marker('plain'), marker('catch'), marker('taken'));
}

function drawNode(n, id) {
  const st = n.st;
  const g = svg('g', {
    class: `node node-${st.type || 'state'}${n.inner ? ' compound' : ''}`,
    'data-state': st.name, 'data-status': 'pending', 'data-type': st.type || '',
    transform: `translate(${n.x},${n.y})`,
  });
  g.append(svg('title', {}, `${st.name} (${st.type || 'state'})`));
  const { w, h } = n;
  if (n.inner) {
    g.append(svg('rect', { class: 'shape', width: w, height: h, rx: 10 }));
    g.append(svg('text', { class: 'box-title', x: 12, y: 19 }, n.title,
      svg('tspan', { class: 'sub', dx: 8 }, n.tag)));
    let x = BOX_PAD;
    for (const inner of n.inner) {
      let y = BOX_HEAD;
      const branchH = h - BOX_HEAD - BOX_PAD + 6;
      g.append(svg('rect', { class: 'branch', x: x - 7, y: y - 4, width: inner.lay.w + 14, height: branchH, rx: 6 }));
      if (inner.title) {
        const title = fitBranchTitle(inner.title, inner.lay.w + 4);
        g.append(svg('text', { class: 'branch-title', x, y: y + 11 },
          title !== inner.title ? svg('title', {}, inner.title) : null, title));
        y += BRANCH_HEAD;
      }
      const sub = svg('g', { class: 'subgraph', transform: `translate(${x},${y})` });
      drawLayout(inner.lay, sub, id);
      g.append(sub);
      x += inner.lay.w + GAP_X;
    }
    return g;
  }
  if (st.type === 'choice') {
    const c = 14;
    g.append(svg('polygon', { class: 'shape', points: `${c},0 ${w - c},0 ${w},${h / 2} ${w - c},${h} ${c},${h} 0,${h / 2}` }));
  } else {
    g.append(svg('rect', { class: 'shape', width: w, height: h, rx: st.type === 'pass' ? h / 2 : 8 }));
  }
  if (st.end) g.append(svg('rect', { class: 'end-mark', x: 3, y: 3, width: w - 6, height: h - 6, rx: st.type === 'pass' ? (h - 6) / 2 : 6 }));
  g.append(svg('text', { class: 'label', x: w / 2, y: n.sub ? 22 : h / 2 + 4.5, 'text-anchor': 'middle' }, n.label));
  if (n.sub) g.append(svg('text', { class: 'sub', x: w / 2, y: 39, 'text-anchor': 'middle' }, n.sub));
  return g;
}

const labelW = (text) => textW(cut(text, 28), 11, 400) + 12;

function edgeLabel(text, x, y) {
  const t = cut(text, 28);
  const w = labelW(text);
  return svg('g', { class: 'edge-label', transform: `translate(${x},${y})` },
    svg('rect', { x: -w / 2, y: -9, width: w, height: 18, rx: 4 }),
    svg('text', { x: 0, y: 4, 'text-anchor': 'middle' }, t));
}

function drawLayout(lay, parent, id) {
  const edgesG = svg('g', { class: 'edges' });
  const nodesG = svg('g', { class: 'nodes' });
  const labelsG = svg('g', { class: 'labels' });
  parent.append(edgesG, nodesG, labelsG);
  for (const n of lay.nodes) nodesG.append(drawNode(n, id));

  let lane = 0;
  for (const e of lay.edges) {
    const a = lay.nodeOf.get(e.from);
    const b = lay.nodeOf.get(e.to);
    let d;
    let lx;
    let ly;
    if (e.back) {
      lane += 1;
      const x = lay.laneX + 14 * (lane - 1);
      const sy = a.y + a.h * 0.4;
      const ty = b.y + b.h * 0.6;
      d = `M${a.x + a.w},${sy} H${x} V${ty} H${b.x + b.w}`;
      lx = x;
      ly = (sy + ty) / 2;
    } else {
      const sx = e.kind === 'catch' ? a.x + a.w * 0.82 : a.x + a.w / 2;
      const sy = a.y + a.h;
      const tx = b.x + b.w / 2;
      const ty = b.y;
      const k = Math.max(18, (ty - sy) / 2);
      d = `M${sx},${sy} C${sx},${sy + k} ${tx},${ty - k} ${tx},${ty}`;
      // The label: on the curve, nearer the target for a choice's fan-out,
      // near the source on a long edge (across layers).
      const t = ty - sy > GAP_Y + 10 ? 0.2 : (e.kind === 'choice' || e.kind === 'default') ? 0.62 : 0.5;
      const u = 1 - t;
      lx = u * u * u * sx + 3 * u * u * t * sx + 3 * u * t * t * tx + t * t * t * tx;
      ly = u * u * u * sy + 3 * u * u * t * (sy + k) + 3 * u * t * t * (ty - k) + t * t * t * ty;
    }
    const kind = e.kind === 'catch' ? 'catch' : 'plain';
    edgesG.append(svg('path', {
      class: `edge edge-${e.kind}${e.back ? ' edge-back' : ''}`, d,
      'data-from': e.from, 'data-to': e.to, 'data-kind': kind,
      'marker-end': `url(#${id}-${kind})`,
    }));
    if (e.label) labelsG.append(edgeLabel(e.label, lx, ly));
  }
}

/** An <svg> drawing of graph G (its nodes start as "pending"). */
export function renderGraph(graph) {
  const id = `dg${++uid}`;
  const lay = layout(graph);
  const PAD = 16;
  const TOP = 40; // room for the start marker
  const W = Math.ceil(lay.w + PAD * 2);
  const H = Math.ceil(lay.h + TOP + PAD);
  const root = svg('svg', {
    class: 'graph-svg', viewBox: `0 0 ${W} ${H}`, width: W, height: H,
    role: 'img', 'aria-label': `Diagram of workflow ${graph && graph.name ? graph.name : ''}`,
    'data-gid': id,
  });
  root.append(defs(id));
  const g = svg('g', { transform: `translate(${PAD},${TOP})` });
  const first = lay.nodes.find((n) => n.st === graph.states[0]);
  if (first) {
    const cx = first.x + first.w / 2;
    g.append(svg('circle', { class: 'start-mark', cx, cy: -28, r: 6 }));
    g.append(svg('path', { class: 'edge edge-start', d: `M${cx},-22 V0`, 'marker-end': `url(#${id}-plain)` }));
  }
  drawLayout(lay, g, id);
  root.append(g);
  return root;
}

// ----------------------------------------------------------------- statuses

const reached = (s) => s !== undefined && s !== 'pending';
const failedish = (s) => s === 'failed' || s === 'timed_out';

/** A state's own status from its steps' statuses (in start order). */
function ownStatus(list) {
  if (!list || !list.length) return undefined;
  if (list.includes('running')) return 'running';
  const active = list.find((s) => ACTIVE.has(s));
  return active || list[list.length - 1];
}

/**
 * The status of every state of graph G (by name) from the instance's steps:
 * a state's status is its latest step's (one still running wins); a parallel
 * or map state's comes from its branches when it has no step of its own; a
 * choice or pass state with no step counts completed once a successor ran.
 */
export function stateStatuses(graph, steps, instanceStatus) {
  const byState = new Map();
  for (const t of steps || []) {
    for (const k of new Set([t.state, t.name])) {
      if (k === null || k === undefined) continue;
      if (!byState.has(k)) byState.set(k, []);
      byState.get(k).push(t.status);
    }
  }
  const result = new Map();

  const branchStatus = (b) => {
    const list = (b.states || []).map((s) => result.get(s.name));
    if (!list.some(reached)) return 'pending';
    if (list.some((s) => ACTIVE.has(s))) return 'running';
    const ends = (b.states || []).filter((s) => s.end || (!s.next && !(s.choices || []).length && !s.default));
    if (ends.some((s) => result.get(s.name) === 'completed')) return 'completed';
    if (list.some(failedish)) return 'failed';
    return 'partial';
  };

  const visit = (g) => {
    const states = (g && g.states) || [];
    for (const st of states) {
      let s = ownStatus(byState.get(st.name));
      const subs = subgraphsOf(st);
      if (subs.length) {
        const bs = subs.map((b) => { visit(b); return branchStatus(b); });
        let derived;
        if (bs.every((x) => x === 'pending')) derived = undefined;
        else if (bs.every((x) => x === 'completed')) derived = 'completed';
        else if (bs.includes('running')) derived = 'running';
        else if (bs.includes('failed')) derived = 'failed';
        else if (TERMINAL.has(instanceStatus)) derived = instanceStatus === 'completed' ? 'completed' : instanceStatus;
        else derived = 'running';
        s = s ?? derived;
      }
      result.set(st.name, s ?? 'pending');
    }
    // Choice and pass states often leave no step: passed through if a successor
    // ran, or if a completed state's unconditional `next` leads to them.
    const entered = new Set();
    for (let changed = true, rounds = 0; changed && rounds <= states.length; rounds++) {
      changed = false;
      for (const st of states) {
        if (st.next && result.get(st.name) === 'completed') entered.add(st.next);
      }
      for (const st of states) {
        if (result.get(st.name) !== 'pending' || !(st.type === 'choice' || st.type === 'pass')) continue;
        if (entered.has(st.name) || edgesOf(st).some((e) => reached(result.get(e.to)))) {
          result.set(st.name, 'completed');
          changed = true;
        }
      }
    }
  };
  visit(graph);
  return result;
}

/** Sets data-status on each node of a rendered graph, and marks the edges taken. */
export function applyStatuses(root, graph, steps, instanceStatus) {
  const statuses = stateStatuses(graph, steps, instanceStatus);
  const id = root.getAttribute('data-gid');
  for (const el of root.querySelectorAll('.node')) {
    const name = el.getAttribute('data-state');
    const status = statuses.get(name) || 'pending';
    if (el.getAttribute('data-status') !== status) el.setAttribute('data-status', status);
    const title = el.querySelector(':scope > title');
    if (title) title.textContent = `${name} (${el.getAttribute('data-type') || 'state'}): ${status}`;
  }
  for (const el of root.querySelectorAll('.edge[data-from]')) {
    const taken = reached(statuses.get(el.getAttribute('data-from'))) && reached(statuses.get(el.getAttribute('data-to')));
    el.classList.toggle('taken', taken);
    const kind = taken ? 'taken' : el.getAttribute('data-kind');
    el.setAttribute('marker-end', `url(#${id}-${kind})`);
  }
  const start = root.querySelector('.edge-start');
  if (start && graph.states && graph.states[0]) {
    const on = reached(statuses.get(graph.states[0].name));
    start.classList.toggle('taken', on);
    start.setAttribute('marker-end', `url(#${id}-${on ? 'taken' : 'plain'})`);
  }
  return statuses;
}
