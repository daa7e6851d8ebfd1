// app.js: the durable dashboard's entry point: hash routing between the pages
// (#/ instances, #/instances/<id> one instance, #/workflows), the header's
// navigation, and the banner shown when the server asks for a token (401).
import { h, BASE, onUnauthorized, setLive } from './util.js';
import { instancesPage } from './instances.js';
import { instancePage } from './instance.js';
import { workflowsPage } from './workflows.js';

let page = null;

function showBanner(nodes) {
  const banner = document.getElementById('banner');
  banner.replaceChildren(...nodes);
  banner.hidden = false;
}

onUnauthorized(() => {
  showBanner([
    h('strong', {}, 'This server needs a token: '),
    `open ${BASE}?token=YOUR_TOKEN`,
    ' (the server then remembers it in a cookie).',
  ]);
});

function route() {
  if (page && page.cleanup) page.cleanup();
  page = null;
  const main = document.getElementById('main');
  main.replaceChildren();
  setLive('idle');
  const raw = location.hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const params = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
  let nav = null;
  let m;
  if (path === '/' || path === '') {
    nav = 'instances';
    page = instancesPage(main, params);
  } else if (path === '/workflows' || path === '/workflows/') {
    nav = 'workflows';
    page = workflowsPage(main, params);
  } else if ((m = path.match(/^\/instances\/(.+)$/))) {
    nav = 'instances';
    let id = m[1];
    try { id = decodeURIComponent(id); } catch { /* keep it as written */ }
    page = instancePage(main, id);
  } else {
    main.append(h('div', { class: 'card empty' }, h('h1', {}, 'Page not found'), h('a', { href: '#/' }, '← Back to the instances')));
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === nav);
    if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  document.title = page && page.title ? `${page.title} · durable` : 'durable';
  window.scrollTo(0, 0);
}

// The token has done its work once the server has set its cookie: keep it out of
// the address bar, the history and bookmarks.
if (new URLSearchParams(location.search).has('token')) {
  const url = new URL(location.href);
  url.searchParams.delete('token');
  history.replaceState(null, '', url.pathname + url.search + url.hash);
}

window.addEventListener('hashchange', route);
route();
