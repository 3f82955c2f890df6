// RLM trajectory viewer: the list page (/trajectories) and one completion
// (/trajectories/{id}), rendered from the orchestrator's JSON endpoints.
//
// Safety: the data is model-written (code, output, replies, prompts), so
// every text goes into the page through textContent / text nodes, never
// through innerHTML; links are built from validated ids only.
'use strict';

(() => {
  const POLL_MS = 1000;
  const LIST_POLL_MS = 2000;
  const KEY_STORAGE = 'rlm-viewer-api-key';
  const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

  // ---------------------------------------------------------------- DOM helpers

  /** Element with attributes and children (strings become text nodes). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = String(v);
        else if (k === 'data') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
        else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
        else if (k === 'href') el.setAttribute('href', safeHref(v));
        else if (k === 'title' || k === 'type' || k === 'id' || k === 'role' || k === 'value' ||
                 k === 'placeholder' || k === 'autocomplete' || k.startsWith('aria-')) el.setAttribute(k, String(v));
        else throw new Error('h(): attribute not allowed: ' + k);
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) append(el, c);
      else if (c instanceof Node) el.appendChild(c);
      else el.appendChild(document.createTextNode(String(c)));
    }
  }

  /** Replaces the children of `el` (nulls skipped, strings as text). */
  function setChildren(el, ...children) {
    el.replaceChildren();
    append(el, children);
  }

  /** Only same-origin paths built by this script. */
  function safeHref(v) {
    const s = String(v);
    return s.startsWith('/') && !s.startsWith('//') ? s : '#';
  }

  function trajectoryHref(id) {
    return ID_RE.test(id) ? '/trajectories/' + encodeURIComponent(id) : '#';
  }

  /** Remembers which <details> the reader opened or closed, across re-renders. */
  const openState = new Map();
  function fold(key, defaultOpen, summary, ...body) {
    const d = h('details', { class: 'fold' }, h('summary', null, summary), ...body);
    d.open = openState.has(key) ? openState.get(key) : defaultOpen;
    d.dataset.key = key;
    d.addEventListener('toggle', () => openState.set(key, d.open));
    return d;
  }

  // ------------------------------------------------------------------- format

  const nf = new Intl.NumberFormat('en-US');
  function int(n) { return nf.format(n || 0); }
  function tokens(n) {
    n = n || 0;
    if (n < 1000) return String(n);
    if (n < 1e6) return (n / 1e3).toFixed(n < 1e4 ? 1 : 0) + 'k';
    return (n / 1e6).toFixed(2) + 'M';
  }
  function ms(v) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    v = Math.max(0, v);
    if (v < 1000) return Math.round(v) + 'ms';
    if (v < 60000) return (v / 1000).toFixed(v < 10000 ? 2 : 1) + 's';
    const m = Math.floor(v / 60000);
    return m + 'm ' + Math.round((v % 60000) / 1000) + 's';
  }
  function usd(cost, known) {
    const c = cost || 0;
    const s = c === 0 ? '$0' : c < 0.01 ? '$' + c.toFixed(4) : '$' + c.toFixed(c < 1 ? 3 : 2);
    if (known) return s;
    return c > 0 ? '≥' + s : '?';
  }
  function when(ts) {
    const d = new Date(ts);
    if (isNaN(d)) return '';
    return d.toLocaleString(undefined, {
      year: 'numeric', month: 'short', day: 'numeric',
      hour: '2-digit', minute: '2-digit', second: '2-digit',
    });
  }
  function plural(n, one, many) { return int(n) + ' ' + (n === 1 ? one : (many || one + 's')); }
  function firstLine(s, max) {
    const line = String(s || '').split('\n').find((l) => l.trim() !== '') || '';
    return line.length > max ? line.slice(0, max - 1) + '…' : line;
  }

  const GOOD_REASONS = new Set(['final']);
  const BUDGET_REASONS = new Set(['max_iterations', 'token_budget', 'cost_budget', 'timeout', 'max_subcalls', 'cancelled']);
  function statusBadge(status) {
    const cls = status === 'running' ? 'run' : status === 'finished' ? 'ok' : 'warn';
    return h('span', { class: 'badge ' + cls, data: { field: 'status' } }, status || 'unknown');
  }
  function reasonBadge(reason) {
    const cls = GOOD_REASONS.has(reason) ? 'ok' : BUDGET_REASONS.has(reason) ? 'warn' : 'bad';
    return h('span', { class: 'badge ' + cls, data: { field: 'termination-reason' } }, reason);
  }

  // --------------------------------------------------------- Python highlighter

  const KEYWORDS = new Set(('False None True and as assert async await break class continue def del ' +
    'elif else except finally for from global if import in is lambda nonlocal not or pass raise ' +
    'return try while with yield match case').split(' '));
  const RLM_NAMES = new Set(['FINAL', 'FINAL_VAR', 'llm_query', 'llm_query_batched', 'rlm_query',
    'rlm_query_batched', 'context', 'SHOW_VARS']);
  const BUILTINS = new Set(('print len range str int float list dict set tuple sum min max sorted ' +
    'enumerate zip map filter open isinstance any all abs round repr type bool').split(' '));
  const TOKEN_RE = /(#[^\n]*)|((?:[rRbBuUfF]{1,2})?(?:"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?))|(\b\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)/g;

  /** Fills `pre` with `code`, coloured; text nodes and spans only. */
  function highlight(pre, code) {
    let last = 0;
    for (const m of code.matchAll(TOKEN_RE)) {
      if (m.index > last) pre.appendChild(document.createTextNode(code.slice(last, m.index)));
      let cls = null;
      if (m[1]) cls = 'c';
      else if (m[2]) cls = 's';
      else if (m[3]) cls = 'n';
      else if (KEYWORDS.has(m[4])) cls = 'k';
      else if (RLM_NAMES.has(m[4])) cls = 'f';
      else if (BUILTINS.has(m[4])) cls = 'b';
      if (cls) pre.appendChild(h('span', { class: 'tok-' + cls }, m[0]));
      else pre.appendChild(document.createTextNode(m[0]));
      last = m.index + m[0].length;
    }
    if (last < code.length) pre.appendChild(document.createTextNode(code.slice(last)));
    return pre;
  }

  // ---------------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path) {
    const headers = { Accept: 'application/json' };
    let key = null;
    try { key = sessionStorage.getItem(KEY_STORAGE); } catch (_) { /* storage off */ }
    if (key) headers.Authorization = 'Bearer ' + key;
    const r = await fetch(path, { headers, cache: 'no-store', credentials: 'same-origin' });
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (!r.ok) throw new ApiError(r.status, (body && body.error) || r.statusText || 'request failed');
    return body;
  }

  const app = () => document.getElementById('app');
  function setLive(on, text) {
    const live = document.getElementById('live');
    if (!live) return;
    live.hidden = !on;
    const t = document.getElementById('live-text');
    if (t && text) t.textContent = text;
  }

  function showError(err, retry) {
    if (err instanceof ApiError && err.status === 401) {
      showKeyForm(err.message, retry);
      return;
    }
    setChildren(app(),
      h('p', { class: 'crumbs' }, h('a', { href: '/trajectories' }, '← all trajectories')),
      h('p', { class: 'notice error', role: 'alert' },
        err instanceof ApiError && err.status === 404 ? 'No such trajectory.' : 'Error: ' + err.message),
    );
  }

  function showKeyForm(message, retry) {
    const input = h('input', { type: 'password', placeholder: 'API key', autocomplete: 'off', 'aria-label': 'API key' });
    const go = () => {
      const v = input.value.trim();
      if (!v) return;
      try { sessionStorage.setItem(KEY_STORAGE, v); } catch (_) { /* ignore */ }
      retry();
    };
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter') go(); });
    setChildren(app(), h('div', { class: 'panel keyform' },
      h('h1', null, 'API key needed'),
      h('p', { class: 'muted' }, 'This orchestrator requires an API key (RLM_API_KEYS). ' +
        'The key is kept in this tab only (session storage) and sent to this server alone.'),
      message ? h('p', { class: 'faint' }, message) : null,
      input,
      h('button', { class: 'btn', type: 'button', on: { click: go } }, 'Open'),
    ));
    input.focus();
  }

  // ---------------------------------------------------------------- list page

  function listPage() {
    document.title = 'Trajectories · RLM';
    let status = new URLSearchParams(location.search).get('status') || '';
    let rows = [];
    let next = '';
    let timer = null;

    const select = h('select', { class: 'btn', 'aria-label': 'status filter' },
      ['', 'running', 'finished', 'incomplete'].map((s) =>
        h('option', { value: s }, s === '' ? 'all statuses' : s)));
    select.value = status;
    select.addEventListener('change', () => {
      status = select.value;
      const u = new URL(location.href);
      if (status) u.searchParams.set('status', status); else u.searchParams.delete('status');
      history.replaceState(null, '', u.pathname + u.search);
      load(false);
    });

    async function load(more) {
      clearTimeout(timer);
      const q = new URLSearchParams({ limit: '50' });
      if (status) q.set('status', status);
      if (more && next) q.set('page_token', next);
      let data;
      try {
        data = await api('/api/trajectories?' + q);
      } catch (err) {
        showError(err, () => load(false));
        return;
      }
      rows = more ? rows.concat(data.trajectories) : data.trajectories;
      next = data.next_page_token || '';
      render();
      const running = rows.some((r) => r.status === 'running');
      setLive(running, 'live');
      if (running && !more) timer = setTimeout(() => load(false), LIST_POLL_MS);
    }

    function render() {
      const body = rows.length === 0
        ? h('div', { class: 'panel empty' },
          h('p', null, status ? 'No ' + status + ' trajectories.' : 'No trajectories yet.'),
          h('p', null, 'Run a completion, e.g. ', h('code', null, 'rlm run "…" --context file.txt'),
            ', and it appears here.'))
        : h('div', { class: 'panel' }, h('table', { class: 'list' },
          h('thead', null, h('tr', null,
            h('th', null, 'Started'), h('th', null, 'Status'), h('th', null, 'Prompt'),
            h('th', { class: 'hide-sm' }, 'Model'), h('th', { class: 'num' }, 'Iter'),
            h('th', { class: 'num' }, 'Tokens'), h('th', { class: 'num hide-sm' }, 'Cost'),
            h('th', { class: 'num' }, 'Time'))),
          h('tbody', null, rows.map(row))));
      setChildren(app(),
        h('div', { class: 'toolbar' },
          h('h1', null, 'Trajectories'),
          h('span', { class: 'spacer' }),
          select,
          h('button', { class: 'btn', type: 'button', on: { click: () => load(false) } }, 'Refresh')),
        body,
        next ? h('p', null, h('button', { class: 'btn', type: 'button', on: { click: () => load(true) } }, 'Load more')) : null,
      );
    }

    function row(t) {
      const href = trajectoryHref(t.id);
      const u = t.usage || {};
      return h('tr', { data: { trajectory: t.id }, on: { click: (e) => { if (!(e.target instanceof HTMLAnchorElement)) location.href = href; } } },
        h('td', { class: 'when', title: t.started_at || '' }, t.started_at ? when(t.started_at) : '–'),
        h('td', null, t.status === 'finished' && t.termination_reason ? reasonBadge(t.termination_reason) : statusBadge(t.status)),
        h('td', { class: 'prompt' }, h('a', { href, title: t.id }, t.prompt_preview || '(empty prompt)')),
        h('td', { class: 'model hide-sm', title: t.root_model }, t.root_model || '–'),
        h('td', { class: 'num' }, int(t.iterations)),
        h('td', { class: 'num', title: int(u.input_tokens) + ' in / ' + int(u.output_tokens) + ' out' },
          tokens((u.input_tokens || 0) + (u.output_tokens || 0))),
        h('td', { class: 'num hide-sm' }, usd(u.cost_usd, u.cost_known)),
        h('td', { class: 'num' }, ms(t.duration_ms)),
      );
    }

    load(false);
  }

  // ------------------------------------------------------------ the data model

  function newUsage() {
    return { input: 0, output: 0, calls: 0, cost: 0, costKnown: true, latency: 0, code: 0, cpu: 0 };
  }
  function addCall(u, c) {
    u.input += c.input_tokens || 0;
    u.output += c.output_tokens || 0;
    u.calls += 1;
    if (c.cost_usd === null || c.cost_usd === undefined) u.costKnown = false;
    else u.cost += c.cost_usd;
    u.latency += c.latency_ms || 0;
  }
  function addUsage(a, b) {
    a.input += b.input; a.output += b.output; a.calls += b.calls; a.cost += b.cost;
    a.costKnown = a.costKnown && b.costKnown; a.latency += b.latency; a.code += b.code; a.cpu += b.cpu;
  }

  /** Builds the completion tree from the recorded lines (sorted by seq). */
  function buildModel(lines) {
    const m = {
      header: null, startTs: NaN, lastTs: NaN, finished: null, finishedTs: NaN,
      nodes: new Map(), usage: newUsage(), models: new Map(), lineCount: lines.length,
    };
    const subcalls = new Map();
    const node = (id, depth) => {
      let n = m.nodes.get(id);
      if (!n) {
        n = {
          id, depth, iterations: new Map(), own: newUsage(), firstTs: NaN, lastTs: NaN,
          parent: null, subcall: null, item: -1, children: [], model: '', askedTs: NaN, finalBlock: null,
          calls: [], blocks: [],
        };
        m.nodes.set(id, n);
      }
      return n;
    };
    const iter = (n, i) => {
      let it = n.iterations.get(i);
      if (!it) {
        it = { n: i, ts: NaN, call: null, blocks: [], pending: [] };
        n.iterations.set(i, it);
      }
      return it;
    };
    for (const l of lines) {
      const t = Date.parse(l.ts);
      if (l.kind === 'completion_started') {
        m.header = l;
        m.startTs = t;
        node('0', 0);
        continue;
      }
      if (!(m.lastTs >= t)) m.lastTs = t;
      const n = node(l.node, l.depth);
      if (!(n.firstTs <= t)) n.firstTs = t;
      if (!(n.lastTs >= t)) n.lastTs = t;
      switch (l.kind) {
        case 'iteration_started': {
          iter(n, l.iteration).ts = t;
          break;
        }
        case 'model_call': {
          const call = Object.assign({ t }, l);
          addCall(n.own, l);
          addCall(m.usage, l);
          const mu = m.models.get(l.model) || newUsage();
          addCall(mu, l);
          m.models.set(l.model, mu);
          n.calls.push(call);
          if (l.purpose === 'llm_query') {
            const sc = subcalls.get(l.node + '#' + l.subcall_id);
            if (sc && sc.items[l.item_index]) sc.items[l.item_index].calls.push(call);
          } else {
            iter(n, l.iteration).call = call;
            if (!n.model) n.model = l.model;
          }
          break;
        }
        case 'code_executed': {
          const it = iter(n, l.iteration);
          const block = Object.assign({ t, subcalls: it.pending.splice(0) }, l);
          it.blocks.push(block);
          n.blocks.push(block);
          n.own.code += l.duration_ms || 0;
          n.own.cpu += l.cpu_ms || 0;
          if (l.final_called) n.finalBlock = block;
          break;
        }
        case 'subcall_started': {
          const sc = Object.assign({ t, node: l.node, done: null, doneTs: NaN }, l);
          sc.items = (l.prompts || []).map((p, i) => ({
            prompt: p, child: (l.child_node_ids || [])[i] || null, calls: [], outcome: null,
          }));
          iter(n, l.iteration).pending.push(sc);
          subcalls.set(l.node + '#' + l.subcall_id, sc);
          sc.items.forEach((item, i) => {
            if (!item.child) return;
            const c = node(item.child, l.depth + 1);
            c.parent = n.id;
            c.subcall = sc;
            c.item = i;
            c.askedTs = t;
            if (!c.model) c.model = l.model;
            n.children.push(c.id);
          });
          break;
        }
        case 'subcall_finished': {
          const sc = subcalls.get(l.node + '#' + l.subcall_id);
          if (sc) {
            sc.done = l;
            sc.doneTs = t;
            (l.outcomes || []).forEach((o, i) => { if (sc.items[i]) sc.items[i].outcome = o; });
          }
          break;
        }
        case 'completion_finished': {
          m.finished = l;
          m.finishedTs = t;
          break;
        }
        default:
          break;
      }
    }
    const root = m.nodes.get('0');
    if (root && !root.model && m.header) root.model = m.header.root_model;
    // Subtree totals, children first.
    const total = (n, seen) => {
      if (seen.has(n.id)) return newUsage();
      seen.add(n.id);
      const u = newUsage();
      addUsage(u, n.own);
      for (const c of n.children) addUsage(u, total(m.nodes.get(c), seen));
      n.total = u;
      return u;
    };
    const seen = new Set();
    if (root) total(root, seen);
    m.orphans = [...m.nodes.values()].filter((n) => !seen.has(n.id));
    for (const n of m.orphans) total(n, seen);
    // Tree order (depth first) for the timeline.
    m.order = [];
    const walk = (n, visited) => {
      if (visited.has(n.id)) return;
      visited.add(n.id);
      m.order.push(n);
      for (const c of n.children) walk(m.nodes.get(c), visited);
    };
    const visited = new Set();
    if (root) walk(root, visited);
    for (const n of m.orphans) walk(n, visited);
    return m;
  }

  // ---------------------------------------------------------- detail: render

  function detailPage(id) {
    const byseq = new Map();
    let lastSeq = -1;
    let status = '';
    let timer = null;

    async function refresh(initial) {
      clearTimeout(timer);
      let data;
      try {
        data = await api('/api/trajectories/' + encodeURIComponent(id) + (initial ? '' : '?after=' + lastSeq));
      } catch (err) {
        if (initial || !(err instanceof TypeError)) {
          setLive(false);
          showError(err, () => refresh(true));
          return;
        }
        // A network hiccup while live: try again.
        timer = setTimeout(() => refresh(false), POLL_MS * 2);
        return;
      }
      let changed = initial || data.status !== status;
      for (const l of data.lines || []) {
        if (!byseq.has(l.seq)) { byseq.set(l.seq, l); changed = true; }
        if (l.seq > lastSeq) lastSeq = l.seq;
      }
      status = data.status;
      if (changed || status === 'running') render();
      if (status === 'running') {
        setLive(true, 'live · updating every second');
        timer = setTimeout(() => refresh(false), POLL_MS);
      } else {
        setLive(false);
      }
    }

    function render() {
      const lines = [...byseq.values()].sort((a, b) => a.seq - b.seq);
      let model;
      try {
        model = buildModel(lines);
      } catch (err) {
        showError(new Error('could not read this trajectory: ' + err.message));
        return;
      }
      const y = window.scrollY;
      setChildren(app(), renderDetail(id, model, status));
      window.scrollTo(0, y);
    }

    refresh(true);
  }

  function renderDetail(id, m, status) {
    const hd = m.header || {};
    const f = m.finished;
    const now = Date.now();
    const running = status === 'running';
    document.title = (hd.prompt_preview ? firstLine(hd.prompt_preview, 60) + ' · ' : '') + 'RLM trajectory';

    const out = [];
    out.push(h('p', { class: 'crumbs' }, h('a', { href: '/trajectories' }, '← all trajectories')));
    const preview = hd.prompt_preview || '';
    out.push(h('h1', { title: 'prompt (first 200 characters, as recorded)' },
      preview.length >= 200 ? preview + '…' : preview || '(empty prompt)'));
    out.push(h('div', { class: 'meta' },
      statusBadge(status),
      h('span', null, h('b', null, 'trajectory '), h('span', { class: 'mono' }, id)),
      hd.completion_id && hd.completion_id !== id
        ? h('span', null, h('b', null, 'completion '), h('span', { class: 'mono' }, hd.completion_id)) : null,
      isFinite(m.startTs) ? h('span', null, h('b', null, 'started '), when(m.startTs)) : null,
      h('span', null, h('b', null, 'model '), h('span', { class: 'mono' }, hd.root_model || '–')),
      hd.sub_model && hd.sub_model !== hd.root_model
        ? h('span', null, h('b', null, 'sub-model '), h('span', { class: 'mono' }, hd.sub_model)) : null,
    ));

    // Result card
    const result = h('section', { class: 'panel result' });
    const head = h('div', { class: 'result-head' }, h('span', { class: 'label' }, 'Answer'));
    if (f) head.appendChild(reasonBadge(f.termination_reason));
    else if (running) head.appendChild(h('span', { class: 'badge run' }, 'running'));
    else head.appendChild(h('span', { class: 'badge warn', title: 'the orchestrator stopped before the completion ended' }, 'no result recorded'));
    result.appendChild(head);
    if (f) {
      result.appendChild(h('pre', { class: 'answer', data: { field: 'answer' } }, f.answer));
      if (f.detail) result.appendChild(h('div', { class: 'detail-text' }, f.detail));
    } else {
      result.appendChild(h('pre', { class: 'answer pending', data: { field: 'answer' } },
        running ? 'Still running… this page updates as events arrive.' : 'This completion has no recorded result (incomplete).'));
    }
    const u = f ? {
      input: f.total_usage.input_tokens, output: f.total_usage.output_tokens, calls: f.total_usage.calls,
      cost: f.total_usage.cost_usd, costKnown: f.total_usage.cost_known,
    } : m.usage;
    const durationMs = f ? f.duration_ms : (running ? now : m.lastTs) - m.startTs;
    const root = m.nodes.get('0');
    const rootIters = root ? root.iterations.size : 0;
    const treeIters = [...m.nodes.values()].reduce((a, n) => a + n.iterations.size, 0);
    const maxDepth = [...m.nodes.values()].reduce((a, n) => Math.max(a, n.depth), 0);
    const subcallCount = [...m.nodes.values()].reduce((a, n) => a + [...n.iterations.values()]
      .reduce((b, it) => b + it.blocks.reduce((c, bl) => c + bl.subcalls.length, 0) + it.pending.length, 0), 0);
    const stat = (k, v, s, field) => h('div', { class: 'stat' },
      h('div', { class: 'k' }, k), h('div', { class: 'v', data: field ? { field } : null }, v), s ? h('div', { class: 's' }, s) : null);
    result.appendChild(h('div', { class: 'stats' },
      stat('Duration', ms(durationMs), running ? 'so far' : null),
      stat('Tokens', tokens(u.input + u.output), int(u.input) + ' in · ' + int(u.output) + ' out'),
      stat('Cost', usd(u.cost, u.costKnown), u.costKnown ? null : u.cost > 0 ? 'some prices unknown' : 'no price known'),
      stat('Model calls', int(u.calls), 'latency ' + ms(m.usage.latency) + ' summed'),
      stat('Iterations', f ? int(f.iterations) : int(rootIters), (f ? int(f.total_iterations) : int(treeIters)) + ' in the tree'),
      stat('Nodes', int(m.nodes.size), 'depth reached ' + (f ? f.depth_reached : maxDepth), 'node-count'),
      stat('Sub-calls', f ? int(f.subcalls) : int(subcallCount), f ? plural(f.child_rlms, 'child RLM') : null),
    ));
    if (m.models.size > 0) {
      result.appendChild(h('table', { class: 'models' },
        h('thead', null, h('tr', null, h('th', null, 'model'), h('th', { class: 'num' }, 'calls'),
          h('th', { class: 'num' }, 'in'), h('th', { class: 'num' }, 'out'), h('th', { class: 'num' }, 'cost'),
          h('th', { class: 'num' }, 'latency'))),
        h('tbody', null, [...m.models.entries()].sort().map(([name, mu]) => h('tr', null,
          h('td', { class: 'mono' }, name), h('td', { class: 'num' }, int(mu.calls)),
          h('td', { class: 'num' }, int(mu.input)), h('td', { class: 'num' }, int(mu.output)),
          h('td', { class: 'num' }, usd(mu.cost, mu.costKnown)), h('td', { class: 'num' }, ms(mu.latency))))),
      ));
    }
    const lim = hd.limits || {};
    const chips = [];
    const chip = (k, v) => chips.push(h('span', { class: 'chip' }, k + ' ', h('b', null, String(v))));
    if (lim.max_depth !== null && lim.max_depth !== undefined) chip('max_depth', lim.max_depth);
    if (lim.max_iterations) chip('max_iterations', lim.max_iterations);
    if (lim.max_parallel) chip('max_parallel', lim.max_parallel);
    if (lim.max_subcalls !== null && lim.max_subcalls !== undefined) chip('max_subcalls', lim.max_subcalls);
    if (lim.token_budget) chip('token_budget', int(lim.token_budget));
    if (lim.cost_budget_usd) chip('cost_budget', '$' + lim.cost_budget_usd);
    if (lim.timeout_ms) chip('timeout', ms(lim.timeout_ms));
    if (lim.cell_timeout_ms) chip('cell_timeout', ms(lim.cell_timeout_ms));
    (hd.context_ids || []).forEach((c, i) => chip('context_' + i, c.slice(0, 12) + (c.length > 12 ? '…' : '')));
    for (const [k, v] of Object.entries(hd.metadata || {})) chip(k, v);
    if (chips.length) result.appendChild(h('div', { class: 'chips' }, chips));
    out.push(result);

    // Timeline
    out.push(h('h2', null, 'Timeline'));
    out.push(renderTimeline(m, running, now));

    // Tree
    const tools = h('div', { class: 'tree-tools' }, h('h2', null, 'Completion tree'),
      h('button', { class: 'btn', type: 'button', on: { click: () => setAll(true) } }, 'Expand all'),
      h('button', { class: 'btn', type: 'button', on: { click: () => setAll(false) } }, 'Collapse all'));
    out.push(tools);
    const ctx = { m, running };
    if (root) out.push(renderNode(root, ctx, new Set()));
    if (m.orphans.length) {
      out.push(h('div', { class: 'orphans' }, h('h2', null, 'Other nodes'),
        m.orphans.map((n) => renderNode(n, ctx, new Set()))));
    }
    out.push(h('p', { class: 'raw-links' }, 'Raw data: ',
      h('a', { href: '/api/trajectories/' + encodeURIComponent(id) }, 'the recorded lines as JSON'),
      ' (' + plural(m.lineCount, 'line') + ', ' + plural(m.nodes.size, 'node') + ').'));
    return out;
  }

  function setAll(open) {
    for (const d of document.querySelectorAll('main details')) {
      d.open = open;
      if (d.dataset.key) openState.set(d.dataset.key, open);
    }
  }

  function scrollToNode(id) {
    const el = document.querySelector('[data-node-id="' + CSS.escape(id) + '"]');
    if (!el) return;
    // Open the folds that hold it.
    for (let p = el.parentElement; p; p = p.parentElement) {
      if (p.tagName === 'DETAILS' && !p.open) {
        p.open = true;
        if (p.dataset.key) openState.set(p.dataset.key, true);
      }
    }
    el.scrollIntoView({ behavior: 'smooth', block: 'start' });
    el.classList.remove('flash');
    void el.offsetWidth;
    el.classList.add('flash');
  }

  // ----------------------------------------------------------------- timeline

  function renderTimeline(m, running, now) {
    const t0 = m.startTs;
    let t1 = isFinite(m.finishedTs) ? m.finishedTs : Math.max(m.lastTs || t0, running ? now : t0);
    if (!(t1 > t0)) t1 = t0 + 1;
    const span = t1 - t0;
    const pct = (t) => Math.min(100, Math.max(0, ((t - t0) / span) * 100));
    const place = (el, a, b) => {
      el.style.left = pct(a) + '%';
      el.style.width = Math.max(0, pct(b) - pct(a)) + '%';
      return el;
    };
    const grid = h('div', { class: 'tl-grid' });
    // Axis
    const axis = h('div', { class: 'tl-track axis', 'aria-hidden': 'true' });
    const step = niceStep(span / 6);
    for (let v = 0; v <= span + 1e-6; v += step) {
      const tick = h('span', { class: 'tl-tick' }, ms(v));
      tick.style.left = (v / span) * 100 + '%';
      axis.appendChild(tick);
    }
    grid.append(h('div', { class: 'tl-label faint' }, 'node'), axis);

    for (const n of m.order) {
      const start = Math.min(isFinite(n.askedTs) ? n.askedTs : Infinity, isFinite(n.firstTs) ? n.firstTs : Infinity);
      const nodeDone = n.id === '0' ? m.finishedTs
        : n.finalBlock || (n.subcall && n.subcall.items[n.item] && n.subcall.items[n.item].outcome) ? n.lastTs : NaN;
      const end = isFinite(nodeDone) ? nodeDone : running ? now : n.lastTs;
      const label = h('div', { class: 'tl-label', title: 'node ' + n.id + ' · depth ' + n.depth, on: { click: () => scrollToNode(n.id) } },
        '\u00a0'.repeat(Math.min(n.depth, 8) * 2) + n.id);
      const track = h('div', { class: 'tl-track', data: { timelineNode: n.id }, on: { click: () => scrollToNode(n.id) } });
      if (isFinite(start)) {
        track.appendChild(place(h('div', {
          class: 'tl-life' + (isFinite(nodeDone) ? '' : running ? ' running' : ''),
          title: 'node ' + n.id + ': ' + ms(start - t0) + ' → ' + ms(end - t0) + ' (' + ms(end - start) + ')',
        }), start, end));
      }
      for (const c of n.calls) {
        const cls = c.purpose === 'llm_query' ? 'llm' : 'model';
        track.appendChild(place(h('div', {
          class: 'tl-seg ' + cls + (c.error ? ' err' : ''),
          title: (cls === 'llm' ? 'llm_query' : 'model call') + ' · ' + c.model + ' · ' + ms(c.latency_ms) + ' · ' +
            int(c.input_tokens) + ' in / ' + int(c.output_tokens) + ' out' + (c.error ? ' · error' : ''),
        }), c.t - (c.latency_ms || 0), c.t));
      }
      for (const b of n.blocks) {
        track.appendChild(place(h('div', {
          class: 'tl-seg code' + (b.error || b.timed_out ? ' err' : ''),
          title: 'code [' + b.block_index + '] of iteration ' + b.iteration + ' · ' + ms(b.duration_ms) + (b.final_called ? ' · FINAL' : ''),
        }), b.t - (b.duration_ms || 0), b.t));
      }
      if (running && !isFinite(nodeDone)) {
        // What this node is doing right now: waiting for its model, or
        // running code (a block is recorded only when it ends).
        const its = [...n.iterations.values()].sort((a, b) => a.n - b.n);
        const it = its[its.length - 1];
        if (it && it.call) {
          const since = Math.max(it.call.t, ...it.blocks.map((b) => b.t));
          track.appendChild(place(h('div', { class: 'tl-seg code live', title: 'code running for ' + ms(now - since) + ' (so far)' }), since, now));
        } else if (it && isFinite(it.ts)) {
          track.appendChild(place(h('div', { class: 'tl-seg model live', title: 'waiting for the model for ' + ms(now - it.ts) + ' (so far)' }), it.ts, now));
        }
      }
      grid.append(label, track);
    }
    return h('section', { class: 'panel timeline' },
      h('div', { class: 'tl-legend' },
        h('span', { class: 'l-life' }, 'node alive'), h('span', { class: 'l-model' }, 'model call'),
        h('span', { class: 'l-code' }, 'code running'), h('span', { class: 'l-llm' }, 'llm_query call')),
      grid,
      h('div', { class: 'tl-foot' }, h('span', null, isFinite(t0) ? when(t0) : ''),
        h('span', null, 'total ' + ms(span) + (running && !isFinite(m.finishedTs) ? ' so far' : ''))));
  }

  function niceStep(raw) {
    if (!(raw > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const k of [1, 2, 2.5, 5, 10]) if (raw <= k * p) return k * p;
    return 10 * p;
  }

  // --------------------------------------------------------------------- tree

  /** Tokens, cost, calls and time of a node; `subtree` sums over its
   * descendants too (no code time there: parents wait while children run). */
  function usageLine(u, label, subtree) {
    return h('span', null, label ? label + ' ' : null,
      h('b', null, tokens(u.input)), ' in / ', h('b', null, tokens(u.output)), ' out · ',
      h('b', null, usd(u.cost, u.costKnown)), ' · ', plural(u.calls, 'call'),
      ' · model ', h('b', null, ms(u.latency)),
      subtree ? null : [' · code ', h('b', null, ms(u.code))]);
  }

  function nodeOutcome(n, ctx) {
    if (n.id === '0') return null;
    const item = n.subcall && n.subcall.items[n.item];
    if (item && item.outcome) {
      if ('error' in item.outcome) return h('span', { class: 'badge bad' }, 'error');
      return h('span', { class: 'badge ok' }, n.finalBlock ? 'FINAL' : 'answered');
    }
    // Answered, but its batch is still waiting for siblings.
    if (n.finalBlock) return h('span', { class: 'badge ok' }, 'FINAL');
    return ctx.running ? h('span', { class: 'badge run' }, 'running') : h('span', { class: 'badge warn' }, 'no answer');
  }

  function renderNode(n, ctx, path) {
    if (path.has(n.id)) return h('div', { class: 'notice error' }, 'cycle at node ' + n.id);
    path = new Set(path).add(n.id);
    const hasKids = n.children.length > 0;
    const el = h('div', { class: 'node', data: { nodeId: n.id, depth: n.depth } },
      h('div', { class: 'node-head' },
        h('span', { class: 'node-id' }, 'node ' + n.id),
        h('span', { class: 'badge' }, 'depth ' + n.depth),
        n.id === '0' && ctx.m.finished ? reasonBadge(ctx.m.finished.termination_reason) : nodeOutcome(n, ctx),
        h('span', { class: 'node-model', title: 'model' }, n.model || ''),
        h('span', { class: 'node-totals' },
          usageLine(n.own, hasKids ? 'own' : null),
          hasKids ? usageLine(n.total, 'with sub-calls', true) : null)));
    const body = h('div', { class: 'node-body' });
    const iters = [...n.iterations.values()].sort((a, b) => a.n - b.n);
    if (iters.length === 0) body.appendChild(h('p', { class: 'muted' }, ctx.running ? 'Starting…' : 'No iterations recorded.'));
    iters.forEach((it, idx) => {
      const last = idx === iters.length - 1;
      body.appendChild(renderIteration(n, it, ctx, path, iters.length <= 3 || last));
    });
    el.appendChild(body);
    return el;
  }

  function renderIteration(n, it, ctx, path, defaultOpen) {
    const key = 'n' + n.id + ':i' + it.n;
    const c = it.call;
    const nsub = it.blocks.reduce((a, b) => a + b.subcalls.length, 0) + it.pending.length;
    const final = it.blocks.some((b) => b.final_called);
    const summary = [
      h('span', { class: 'it-title' }, 'iteration ' + it.n),
      c ? h('span', { class: 'it-meta' }, tokens(c.input_tokens) + ' in / ' + tokens(c.output_tokens) + ' out · ' + ms(c.latency_ms)) : null,
      h('span', { class: 'it-meta' }, plural(it.blocks.length, 'code block')),
      nsub ? h('span', { class: 'it-meta' }, plural(nsub, 'sub-call')) : null,
      final ? h('span', { class: 'badge ok' }, 'FINAL') : null,
      c && c.error ? h('span', { class: 'badge bad' }, 'model error') : null,
      it.blocks.some((b) => b.error) ? h('span', { class: 'badge bad' }, 'exception') : null,
    ];
    const d = h('details', { class: 'iteration' }, h('summary', null, summary));
    d.open = openState.has(key) ? openState.get(key) : defaultOpen;
    d.dataset.key = key;
    d.addEventListener('toggle', () => openState.set(key, d.open));
    const body = h('div', { class: 'it-body' });
    if (c) {
      body.appendChild(h('div', { class: 'call' },
        h('span', { class: 'kind' }, 'model call'),
        h('span', { class: 'mono' }, c.model),
        h('span', null, int(c.input_tokens) + ' in / ' + int(c.output_tokens) + ' out tokens'),
        h('span', null, 'cost ' + usd(c.cost_usd || 0, c.cost_usd !== null && c.cost_usd !== undefined)),
        h('span', null, 'latency ' + ms(c.latency_ms))));
      if (c.error) body.appendChild(h('pre', { class: 'errtext call-error' }, c.error));
      if (c.response_text) {
        body.appendChild(fold(key + ':reply', false,
          'model reply · ' + int(c.response_text.length) + ' chars · ' + firstLine(c.response_text, 90),
          h('pre', { class: 'text' }, c.response_text)));
      }
    } else if (ctx.running) {
      body.appendChild(h('div', { class: 'call' }, h('span', { class: 'kind' }, 'model call'), 'waiting for the model…'));
    }
    for (const b of it.blocks) body.appendChild(renderBlock(n, it, b, ctx, path));
    if (it.pending.length) {
      // Sub-calls of a block still running.
      const blk = h('div', { class: 'block running' },
        h('div', { class: 'block-head' }, h('span', { class: 'title' }, 'code [' + it.blocks.length + ']'),
          ctx.running ? h('span', { class: 'badge run' }, 'running') : h('span', { class: 'badge warn' }, 'did not finish')));
      for (const sc of it.pending) blk.appendChild(renderSubcall(sc, ctx, path));
      body.appendChild(blk);
    }
    d.appendChild(body);
    return d;
  }

  function renderBlock(n, it, b, ctx, path) {
    const key = 'n' + n.id + ':i' + it.n + ':b' + b.block_index;
    const flags = [];
    if (b.final_called) flags.push(h('span', { class: 'badge ok' }, 'FINAL'));
    if (b.timed_out) flags.push(h('span', { class: 'badge bad' }, 'timed out'));
    if (b.session_ended) flags.push(h('span', { class: 'badge bad' }, 'session ended'));
    if (b.output_truncated) flags.push(h('span', { class: 'badge warn' }, 'output truncated'));
    if (b.error) flags.push(h('span', { class: 'badge bad' }, 'exception'));
    const el = h('div', { class: 'block', data: { block: b.block_index } },
      h('div', { class: 'block-head' },
        h('span', { class: 'title' }, 'code [' + b.block_index + ']'),
        h('span', null, 'ran ' + ms(b.duration_ms) + (b.cpu_ms ? ' · cpu ' + ms(b.cpu_ms) : '')),
        b.subcalls.length ? h('span', null, plural(b.subcalls.length, 'sub-call')) : null,
        flags));
    const lines = (b.code || '').split('\n').length;
    el.appendChild(fold(key + ':code', true, 'code · ' + plural(lines, 'line'),
      highlight(h('pre', { class: 'code' }), b.code || '')));
    for (const sc of b.subcalls) el.appendChild(renderSubcall(sc, ctx, path));
    if (b.output) {
      const olines = b.output.split('\n').length;
      el.appendChild(fold(key + ':out', true, 'output · ' + plural(olines, 'line'),
        h('pre', { class: 'output' }, b.output)));
    }
    if (b.error) el.appendChild(fold(key + ':err', true, 'exception · ' + firstLine(b.error, 100), h('pre', { class: 'errtext' }, b.error)));
    return el;
  }

  function renderSubcall(sc, ctx, path) {
    const fn = (sc.subcall_kind === 'rlm_query' ? 'rlm_query' : 'llm_query') + (sc.batched ? '_batched' : '');
    const done = sc.done;
    const errors = done ? (done.outcomes || []).filter((o) => 'error' in o).length : 0;
    const head = h('div', { class: 'subcall-head' },
      h('span', { class: 'title' }, 'sub-call #' + sc.subcall_id + ' · ' + fn + ' ×' + sc.items.length),
      h('span', { class: 'mono' }, sc.model),
      sc.degraded ? h('span', { class: 'badge warn', title: 'at max_depth: rlm_query ran as plain model calls' }, 'degraded') : null,
      done ? h('span', null, 'done in ' + ms(done.duration_ms)) : h('span', { class: 'badge run' }, ctx.running ? 'running' : 'unfinished'),
      done ? h('span', null, tokens(done.usage.input_tokens) + ' in / ' + tokens(done.usage.output_tokens) + ' out · ' +
        usd(done.usage.cost_usd, done.usage.cost_known)) : null,
      errors ? h('span', { class: 'badge bad' }, plural(errors, 'error')) : null);
    const list = h('ol', { class: 'items' });
    sc.items.forEach((item, i) => {
      const key = 's' + sc.node + '#' + sc.subcall_id + ':' + i;
      const p = item.prompt || '';
      const long = p.length > 160 || p.includes('\n');
      const li = h('li', null,
        h('div', { class: 'item-head' }, h('span', { class: 'idx' }, 'prompt[' + i + ']'),
          long ? fold(key + ':prompt', false, firstLine(p, 140), h('pre', { class: 'text' }, p))
            : h('span', { class: 'prompt-text' }, p)));
      for (const c of item.calls) {
        li.appendChild(h('div', { class: 'call' },
          h('span', { class: 'kind llm' }, 'model call'),
          h('span', { class: 'mono' }, c.model),
          h('span', null, int(c.input_tokens) + ' in / ' + int(c.output_tokens) + ' out'),
          h('span', null, 'cost ' + usd(c.cost_usd || 0, c.cost_usd !== null && c.cost_usd !== undefined)),
          h('span', null, 'latency ' + ms(c.latency_ms))));
        if (c.error) li.appendChild(h('pre', { class: 'errtext call-error' }, c.error));
      }
      if (item.child) {
        const child = ctx.m.nodes.get(item.child);
        if (child) li.appendChild(renderNode(child, ctx, path));
      }
      const o = item.outcome;
      if (o && 'error' in o) {
        li.appendChild(h('div', { class: 'outcome error' }, h('span', { class: 'idx' }, 'error[' + i + ']'), h('span', { class: 'val' }, o.error)));
      } else if (o) {
        li.appendChild(h('div', { class: 'outcome' }, h('span', { class: 'idx' }, 'answer[' + i + ']'), h('span', { class: 'val' }, o.text)));
      } else {
        li.appendChild(h('div', { class: 'outcome pending' }, h('span', { class: 'idx' }, 'answer[' + i + ']'),
          h('span', { class: 'val' }, ctx.running ? 'waiting…' : 'none recorded')));
      }
      list.appendChild(li);
    });
    return h('div', { class: 'subcall', data: { subcall: sc.subcall_id } }, head, list);
  }

  // ------------------------------------------------------------------- start

  function start() {
    const m = location.pathname.match(/^\/trajectories\/([^/]+)\/?$/);
    if (m) {
      let id = '';
      try { id = decodeURIComponent(m[1]); } catch (_) { id = ''; }
      if (!ID_RE.test(id)) {
        showError(new Error('invalid trajectory id (letters, digits, _ and -, at most 64)'));
        return;
      }
      detailPage(id);
    } else {
      listPage();
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
