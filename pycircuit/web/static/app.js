// The live view: state arrives over SSE (changed sections only) and the DOM
// is built with createElement/textContent only: anchor names, element
// states and output tails are user data and are never parsed as HTML.
'use strict';
(function () {
  const csrf = document.querySelector('meta[name=csrf]').content;
  const state = {};
  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'data') Object.assign(e.dataset, v);
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else e[k] = v;
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid instanceof Node ? kid : String(kid));
    return e;
  }

  const bytes = (n) => {
    if (n === null || n === undefined) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
  };
  const pct = (x) => (x === null || x === undefined) ? '–' : `${x.toFixed(1)} %`;
  const age = (started) => {
    let s = Math.max(0, Math.floor(Date.now() / 1000 - started));
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.floor(s / 60)} min`;
    return `${Math.floor(s / 3600)} h`;
  };
  const clock = (t) => new Date(t * 1000).toLocaleTimeString();
  const summary = (st) => {
    if (st === null || st === undefined) return '';
    const text = typeof st === 'object'
      ? Object.entries(st).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ')
      : String(st);
    return text.length > 160 ? text.slice(0, 159) + '…' : text;
  };

  // -- sections ---------------------------------------------------------------
  function renderHosts() {
    const rows = (state.hosts || []).map((h) => h.error
      ? el('tr', { data: { host: h.id } }, el('td', {}, h.id), el('td', {}, h.url),
           el('td', { colSpan: 6, className: 'error' }, h.error))
      : el('tr', { data: { host: h.id } },
          el('td', { className: 'anchor-name' }, h.id), el('td', { className: 'muted' }, h.url),
          el('td', {}, `${pct(h.cpu)} of ${h.cpus}`),
          el('td', {}, `${bytes(h.mem_total - h.mem_available)} / ${bytes(h.mem_total)}`),
          el('td', {}, bytes(h.server_rss)), el('td', { className: 'workers' }, h.workers),
          el('td', {}, h.spawns), el('td', {}, h.members)));
    $('hosts').tBodies[0].replaceChildren(...rows);
  }

  function buttons(id, isWorker) {
    const b = [el('button', { type: 'button', className: 'stack', on: { click: () => showStack(id) } }, 'stack'),
               el('button', { type: 'button', className: 'profile', on: { click: () => showProfile(id) } }, 'profile')];
    if (isWorker) {
      b.push(el('button', { type: 'button', className: 'control kill', title: 'control: kills this worker',
                            on: { click: () => kill(id) } }, '✖ kill'));
    }
    return b;
  }

  function workerStats(w) {
    if (!w) return null;
    return el('span', { className: 'stats' }, `pid ${w.pid} · CPU ${pct(w.cpu)} · RSS ${bytes(w.rss)} · age `,
              el('span', { className: 'age', data: { started: w.started } }, age(w.started)));
  }

  function renderTree() {
    const top = el('ul');
    for (const h of state.hosts || []) {
      const workers = new Map(((state.workers || {})[h.id] || []).map((w) => [w.id, w]));
      const elements = (state.elements || {})[h.id] || {};
      const nodes = new Map();
      const rootList = el('ul');
      top.append(el('li', { className: 'host-root', data: { host: h.id } },
                    el('span', { className: 'anchor-name' }, `/${h.id}`), el('span', { className: 'kind' }, 'server'),
                    ...buttons(h.id, false), rootList));
      for (const [path, kind] of (state.tree || {})[h.id] || []) {
        const cut = path.lastIndexOf('/');
        const name = path.slice(cut + 1);
        const parent = cut < 0 ? rootList : nodes.get(path.slice(0, cut));
        if (!parent) continue;
        const kids = el('ul');
        const li = el('li', { data: { path: `/${h.id}/${path}` } }, el('span', { className: 'anchor-name' }, name));
        if (kind) li.append(el('span', { className: `kind ${kind.replace(/[^a-z]/g, '')}` }, kind));
        if (kind === 'worker') {
          li.dataset.worker = name;
          li.append(workerStats(workers.get(name)) || '', ...buttons(name, true));
        } else if (kind && elements[path]) {
          li.append(el('span', { className: 'state' }, summary(elements[path].state)));
        }
        li.append(kids);
        parent.append(li);
        nodes.set(path, kids);
      }
    }
    $('tree').replaceChildren(top);
  }

  function renderEvents() {
    const items = [...(state.events || [])].reverse().map((ev) =>
      el('li', { className: `ev-${ev.kind}` }, `${clock(ev.time)} ${ev.kind} `, el('span', { className: 'anchor-name' }, `/${ev.host}`)));
    $('events').replaceChildren(...items);
  }

  function renderRemains() {
    const out = [];
    for (const [hid, list] of Object.entries(state.remains || {})) {
      for (const r of list) {
        const exit = r.signal ? `signal ${r.signal}` : `exit ${r.exit ?? '–'}`;
        out.push(el('details', { data: { worker: r.id || '' } },
          el('summary', {}, el('span', { className: 'anchor-name' }, r.id || '(never registered)'),
             ` pid ${r.pid} on ${hid.slice(0, 7)}… — ${r.cause} (${exit}), died ${clock(r.died)}`),
          el('div', { className: 'muted' }, 'stdout (tail)'), el('pre', { className: 'stdout' }, r.stdout || '(empty)'),
          el('div', { className: 'muted' }, 'stderr (tail)'), el('pre', { className: 'stderr' }, r.stderr || '(empty)')));
      }
    }
    $('remains').replaceChildren(...(out.length ? out : [el('span', { className: 'muted' }, 'none')]));
  }

  function render(changed) {
    if ('error' in changed) {
      $('error').hidden = !state.error;
      $('error').textContent = state.error || '';
    }
    if ('hosts' in changed) renderHosts();
    if (['hosts', 'tree', 'workers', 'elements'].some((k) => k in changed)) renderTree();
    if ('events' in changed) renderEvents();
    if ('remains' in changed) renderRemains();
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  // -- tools --------------------------------------------------------------------
  async function fetchText(url, options) {
    const resp = await fetch(url, options);
    const text = await resp.text();
    if (!resp.ok) {
      let msg = text;
      try { msg = JSON.parse(text).error || text; } catch (e) { /* not JSON: the text is the message */ }
      throw new Error(msg);
    }
    return text;
  }

  function inspecting(id, what) {
    $('target').textContent = `${what} of ${id}`;
    const box = $('inspect');
    box.className = '';
    box.replaceChildren(el('span', { className: 'muted' }, `${what}…`));
    return box;
  }

  async function showStack(id) {
    const box = inspecting(id, 'stack');
    try {
      box.replaceChildren(el('pre', { id: 'stack' }, await fetchText(`/api/stack?id=${encodeURIComponent(id)}`)));
    } catch (e) {
      box.replaceChildren(el('div', { className: 'error' }, e.message));
    }
  }

  async function showProfile(id) {
    const seconds = Number($('seconds').value) || 2;
    const box = inspecting(id, `CPU profile (${seconds} s)`);
    try {
      const text = await fetchText(`/api/profile?id=${encodeURIComponent(id)}&seconds=${seconds}`);
      const flame = el('div', { id: 'flame' });
      box.replaceChildren(flame, el('details', {}, el('summary', {}, 'collapsed stacks'), el('pre', {}, text)));
      window.renderFlame(flame, text);
    } catch (e) {
      box.replaceChildren(el('div', { className: 'error' }, e.message));
    }
  }

  async function kill(id) {
    if (!window.confirm(`Kill worker ${id}?`)) return;
    try {
      await fetchText('/api/kill', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
                                     body: JSON.stringify({ id }) });
    } catch (e) {
      $('error').hidden = false;
      $('error').textContent = `kill ${id}: ${e.message}`;
    }
  }

  // -- live updates -------------------------------------------------------------
  const source = new EventSource('/events');
  source.addEventListener('state', (ev) => {
    const changed = JSON.parse(ev.data);
    Object.assign(state, changed);
    render(changed);
    $('status').textContent = 'live';
    $('status').className = 'status live';
  });
  source.addEventListener('error', () => {
    $('status').textContent = 'reconnecting…';
    $('status').className = 'status down';
  });
  setInterval(() => {
    for (const s of document.querySelectorAll('.age')) s.textContent = age(Number(s.dataset.started));
  }, 1000);
})();
