/* torwart's web page: polls the JSON API (docs/api.md) and draws it.
 * Plain script, no libraries, no build step; embedded in the binary.
 *
 * Stable hooks for tests (the Chromium test relies on these; keep them):
 *
 *  body[data-updated]     count of successful polls (every request of a poll answered)
 *  body[data-view]        "overview" | "member"
 *  body.stale             class set while the daemon does not answer
 *  #banner                role=alert; hidden when all is well; data-kind = "down" | "auth" | "error"
 *  #version #uptime #last-update
 *
 *  Overview (#view-overview). Every live number has data-value = the raw JSON value:
 *  #down-bps #up-bps      bit/s            #rx-pps #tx-pps #drops-ps
 *  #flows #nat-bindings   counts           #generation  policy generation, data-refused = "true" while
 *                                          the latest reload was refused (then class "bad", and said below it)
 *  #forwarding            "yes"/"NO"       #pair (hidden if no pair), #pair-state chips
 *  [data-field="worker-load"][data-worker=N]  one per worker, data-value = load 0..1
 *  #ports                 table, tr[data-interface]
 *  #traffic-chart         svg (path.series[data-series="down"|"up"])
 *  #top-members           table, tbody tr[data-member-id=ID] (click goes to the member page),
 *                         td[data-field="down-bps"|"up-bps"] with data-value
 *  #members-total
 *  #drops                 table, tr[data-reason=NAME], td[data-field="total"|"rate"] with data-value
 *  #drops-chart           svg
 *  #timeouts              table, tr[data-series="tcp/established"], td[data-bucket="≤10s"] data-value
 *                         (last row tr[data-series="total"]); header th[data-bucket]
 *  #timeouts-chart        svg, g[data-field="timeout-bucket"][data-bucket="≤10s"|…|">24h"][data-count]
 *  #reloads               table, tr[data-generation=N] (class "refused" when refused),
 *                         td[data-field="result"] = "ok" or the reason
 *
 *  Member page (#view-member, at #/member/ID):
 *  #member-name #member-id #member-status #member-plan #member-error (shown on 404)
 *  #member-down-bps #member-up-bps        bit/s, data-value
 *  #member-queue-delay #member-shaper-drops
 *  #member-rtt-inside #member-rtt-outside data-value = microseconds ("" until measured)
 *  #member-diagnosis      ul, li[data-kind="inside"|"outside"|"queue"|"plan"|"ok"|"unknown"|"status"]
 *  #member-today #member-month #member-total  tr with data-down/data-up (bytes) and
 *                         td[data-field="down"|"up"|"sum"]
 *  #member-addresses #member-public-addresses
 *  #member-forwards       table
 *  #member-flows          table, tbody tr[data-field="flow"]; #member-flows-note
 *
 *  #member-search (form), #member-search-id (input)
 */
'use strict';

(function () {
  const POLL_MS = 1000;
  const FETCH_TIMEOUT_MS = 4000;
  const TOKEN_KEY = 'torwart.token';
  // Endpoints and how often each is asked for, by view.
  const EVERY = { timeouts: 5000, flows: 2000 }; // the others: every poll (1 s)
  const VIEW_NEEDS = {
    overview: ['status', 'history', 'members', 'drops', 'timeouts', 'reloads'],
    member: ['status', 'member', 'flows'],
  };
  const COLORS = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#7a5195', '#8c8c00'];
  const OTHER_COLOR = '#9a9a9a';

  const $ = (id) => document.getElementById(id);
  const state = {
    data: {},            // latest good answer per endpoint
    last: {},            // when each endpoint was last fetched (ms)
    inFlight: false, again: false, timer: null,
    polls: 0, lastOk: null,
    refused: {}, refusal: null,          // endpoints this listener refuses (403), and why
    view: null, memberId: null,          // null: route() sees a change at start and polls
    hover: {},           // chart hover index by chart id
    colors: {},          // chart id -> series name -> colour (stable across updates)
  };

  // --- token
  function setupToken() {
    const params = new URLSearchParams(location.search);
    const t = params.get('token');
    if (t) {
      try { localStorage.setItem(TOKEN_KEY, t); } catch (e) { state.memToken = t; }
      params.delete('token');
      const q = params.toString();
      history.replaceState(null, '', location.pathname + (q ? '?' + q : '') + location.hash);
    }
    showTokenState();
  }
  function token() {
    try { return localStorage.getItem(TOKEN_KEY) || state.memToken || null; } catch (e) { return state.memToken || null; }
  }
  function showTokenState() {
    const el = $('token-state');
    el.replaceChildren();
    if (!token()) return;
    const b = h('button', { type: 'button', class: 'linkish' }, 'forget it');
    b.addEventListener('click', () => {
      try { localStorage.removeItem(TOKEN_KEY); } catch (e) { /* none */ }
      state.memToken = null; showTokenState();
    });
    el.append('An API token is stored in this browser (', b, ').');
  }

  // --- fetching
  class HttpError extends Error {
    constructor(status, path, msg) { super(msg); this.status = status; this.path = path; }
  }
  async function getJSON(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    const headers = { Accept: 'application/json' };
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    try {
      const r = await fetch(path, { headers, signal: ctl.signal, cache: 'no-store' });
      if (!r.ok) {
        let msg = r.statusText;
        try { const j = await r.json(); if (j && j.error) msg = j.error; } catch (e) { /* not JSON */ }
        throw new HttpError(r.status, path, msg);
      }
      return await r.json();
    } finally {
      clearTimeout(timer);
    }
  }
  function pathOf(name) {
    const id = encodeURIComponent(state.memberId);
    // Relative: /api/... from the page at /, and still right behind a proxy's sub-path.
    return { members: 'api/members?sort=rate&limit=20', member: 'api/members/' + id,
      flows: 'api/flows?member=' + id + '&limit=50' }[name] || 'api/' + name;
  }

  // One poll: the due endpoints of the current view, in parallel. Never two at once.
  async function poll() {
    if (state.inFlight) { state.again = true; return; }
    clearTimeout(state.timer);
    state.inFlight = true;
    const started = Date.now();
    const view = state.view, memberId = state.memberId;
    // An endpoint refused with 403 (member data over TCP without a token) is not asked again.
    const due = VIEW_NEEDS[view].filter((n) => !(n === 'flows' && state.memberMissing) && !state.refused[n] &&
      (!state.last[n] || started - state.last[n] >= (EVERY[n] || POLL_MS) - 50 || !(n in state.data)));
    const results = await Promise.allSettled(due.map((n) => getJSON(pathOf(n))));
    // A view or member change while in flight: the member's answers are for the other one.
    const stillSame = view === state.view && memberId === state.memberId;
    let failure = null;
    results.forEach((r, i) => {
      const n = due[i];
      if (!stillSame && (n === 'member' || n === 'flows')) return;
      if (r.status === 'fulfilled') {
        state.data[n] = r.value; state.last[n] = started;
        if (n === 'member') state.memberMissing = false;
      } else if (n === 'member' && r.reason instanceof HttpError && (r.reason.status === 404 || r.reason.status === 400)) {
        state.memberMissing = r.reason.status === 404 ? 'No member with id ' + state.memberId + '.' : 'Not a member id: ' + r.reason.message; delete state.data.member; delete state.data.flows; state.last[n] = started;
      } else if (r.reason instanceof HttpError && r.reason.status === 403) {
        // Not a failure: this listener serves the totals only. Said once, in the banner.
        state.refused[n] = true; state.refusal = r.reason;
      } else if (!failure || rank(r.reason) > rank(failure)) {
        failure = r.reason;
      }
    });
    state.inFlight = false;
    if (!failure) {
      state.polls += 1; state.lastOk = Date.now();
      document.body.dataset.updated = String(state.polls);
      document.body.classList.remove('stale');
      showBanner(state.refusal || null);
    } else {
      document.body.classList.add('stale');
      showBanner(failure);
    }
    if (stillSame) safeRender();
    const wait = state.again ? 0 : Math.max(100, POLL_MS - (Date.now() - started));
    state.again = false;
    state.timer = setTimeout(poll, wait);
  }
  function rank(e) {
    if (e instanceof HttpError) return e.status === 401 || e.status === 403 ? 3 : 1;
    return 2; // no answer at all
  }

  function showBanner(err) {
    let b = $('banner');
    if (!err) { if (!b.hidden) { b.hidden = true; b.replaceChildren(); delete b.dataset.kind; } return; }
    // Built aside and put in only when it says something new (role=alert is read out on change).
    const old = b;
    b = h('div');
    if (err instanceof HttpError && err.status === 403) {
      // No token configured: the TCP listener serves the totals only.
      b.dataset.kind = 'auth';
      b.append(h('strong', {}, 'Member data is not served here (403). '), err.message + '. ',
        'Through the socket the page shows everything: ', h('code', {}, 'ssh -L 9680:/run/torwart/api.sock BOX'),
        ', then open ', h('code', {}, 'http://localhost:9680/'), '.');
    } else if (err instanceof HttpError && err.status === 401) {
      b.dataset.kind = 'auth';
      b.append(h('strong', {}, 'Not authorized (' + err.status + '). '),
        token() ? 'The stored API token was refused. ' : 'The API needs a token. ',
        'Open this page once as ', h('code', {}, location.origin + location.pathname + '?token=YOUR_TOKEN'),
        ' (the token is in the file named by api.token_file); the browser keeps it.');
    } else if (err instanceof HttpError) {
      b.dataset.kind = 'error';
      b.append(h('strong', {}, 'The daemon answered ' + err.status + ' '), 'on ' + err.path + ': ' + err.message + '. Retrying.');
    } else {
      b.dataset.kind = 'down';
      const since = state.lastOk ? 'last answer at ' + clock(state.lastOk / 1000) : 'no answer yet';
      b.append(h('strong', {}, 'Daemon not answering. '), since + '; the figures below are stale. Retrying every second.');
    }
    if (old.hidden || old.dataset.kind !== b.dataset.kind || old.textContent !== b.textContent) {
      old.dataset.kind = b.dataset.kind;
      old.replaceChildren(...b.childNodes);
      old.hidden = false;
    }
  }

  // --- routing
  function route() {
    const m = /^#\/member\/([^/?#]+)/.exec(location.hash);
    const view = m ? 'member' : 'overview';
    const id = m ? decodeURIComponent(m[1]) : null;
    const changed = view !== state.view || id !== state.memberId;
    state.view = view; state.memberId = id;
    document.body.dataset.view = view;
    $('view-overview').hidden = view !== 'overview';
    $('view-member').hidden = view !== 'member';
    if (changed && view === 'member') {
      delete state.data.member; delete state.data.flows; state.memberMissing = false;
      delete state.last.member; delete state.last.flows;
      clearMember();
      document.title = 'member ' + id + ' · torwart';
    } else if (view === 'overview') {
      document.title = 'torwart';
    }
    safeRender();
    if (changed) poll();
  }

  // --- rendering
  function safeRender() {
    try { render(); } catch (e) { console.error(e); }
  }
  function render() {
    const d = state.data;
    if (d.status) renderHeader(d.status);
    if (state.view === 'overview') {
      if (d.status) renderStatus(d.status);
      if (d.history) renderTraffic(d.history);
      if (d.members) renderTop(d.members);
      if (d.drops) renderDrops(d.drops);
      if (d.timeouts) renderTimeouts(d.timeouts);
      if (d.reloads) renderReloads(d.reloads);
    } else {
      renderMember(d.member, d.flows);
    }
  }

  function renderHeader(s) {
    $('host').textContent = location.host;
    $('version').textContent = 'v' + s.version;
    setNum('uptime', s.uptime_s, duration(s.uptime_s));
    $('last-update').textContent = state.lastOk ? clock(state.lastOk / 1000) : 'never';
  }

  function renderStatus(s) {
    const r = s.rates || {};
    setNum('down-bps', r.down_bps, bps(r.down_bps));
    setNum('up-bps', r.up_bps, bps(r.up_bps));
    setNum('rx-pps', r.rx_pps, rate(r.rx_pps));
    setNum('tx-pps', r.tx_pps, rate(r.tx_pps));
    setNum('drops-ps', r.drops_ps, rate(r.drops_ps));
    setNum('flows', s.flows, count(s.flows));
    setNum('nat-bindings', s.nat_bindings, count(s.nat_bindings));
    setNum('generation', s.generation, String(s.generation));
    const gen = $('generation');
    gen.dataset.refused = String(!!s.policy_refused);
    gen.classList.toggle('bad', !!s.policy_refused);
    const sub = s.policy_refused ? ['latest reload REFUSED: the database\u2019s changes are not in force (torwart db check)'] : [];
    if (s.published_generation != null && s.published_generation !== s.generation) sub.push('workers at ' + s.published_generation);
    if (s.routes_generation != null) sub.push('routes ' + s.routes_generation);
    $('generation-sub').textContent = sub.join(' · ') || '\u00a0';
    const fw = $('forwarding');
    fw.textContent = s.forwarding ? 'yes' : 'NO';
    fw.dataset.value = String(!!s.forwarding);
    fw.classList.toggle('bad', !s.forwarding);
    fw.classList.toggle('good', !!s.forwarding);
    renderWorkers(s.workers || []);
    renderPorts(s.ports || []);
    renderPair(s.pair);
  }

  function renderWorkers(ws) {
    const box = $('workers');
    fillKeyed(box, ws, (w) => String(w.worker), (w) => {
      const pct = Math.max(0, Math.min(1, w.load || 0));
      const cls = pct >= 0.9 ? 'bad' : pct >= 0.7 ? 'warn' : '';
      return h('div', { class: 'worker', 'data-field': 'worker-load', 'data-worker': w.worker, 'data-value': w.load,
        role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(pct * 100), 'aria-label': 'core ' + w.worker + ' load' },
        h('span', { class: 'wname' }, 'core ' + w.worker),
        h('span', { class: 'bar' }, h('span', { class: cls, style: { width: (pct * 100).toFixed(1) + '%' } })),
        h('span', { class: 'num wload' }, Math.round(pct * 100) + ' %'),
        h('span', { class: 'num wextra muted' }, count(w.flows) + ' flows · ' + rate(w.rx_pps) + ' pkt/s'));
    });
  }

  function renderPorts(ps) {
    fillTable($('ports'), ps, (p) => p.interface, (p) => ({
      attrs: { 'data-interface': p.interface, class: p.present ? '' : 'bad-row' },
      cells: [p.interface, p.side, p.present ? 'yes' : 'MISSING', cellNum(p.lost, count(p.lost), p.lost > 0 ? 'warn' : '')],
    }));
  }

  function renderPair(p) {
    const box = $('pair');
    if (!p) { box.hidden = true; $('pair-summary').textContent = 'no pair'; return; }
    box.hidden = false;
    const chips = $('pair-state'); chips.replaceChildren();
    const counters = $('pair-counters'); counters.replaceChildren();
    for (const [k, v] of Object.entries(p)) {
      if (typeof v === 'boolean') {
        chips.append(h('span', { class: 'chip ' + (v ? 'good' : 'bad'), 'data-field': 'pair-' + k, 'data-value': v }, k.replace(/_/g, ' ') + (v ? ' ✓' : ' ✗')));
      } else if (typeof v === 'number' || typeof v === 'string') {
        counters.append(h('dt', {}, k.replace(/_/g, ' ')), h('dd', {}, typeof v === 'number' ? count(v) : v));
      }
    }
    const parts = [];
    if ('peer_alive' in p) parts.push(p.peer_alive ? 'peer alive' : 'peer NOT alive');
    if ('ready' in p) parts.push(p.ready ? 'ready' : 'not ready');
    $('pair-summary').textContent = 'pair: ' + (parts.join(', ') || 'present');
  }

  function renderTraffic(hist) {
    const s = hist.samples || [];
    const times = s.map((x) => x.t);
    lineChart($('traffic-chart'), $('traffic-legend'), times, [
      { name: 'down', label: 'Down', color: COLORS[0], values: s.map((x) => x.down_bps) },
      { name: 'up', label: 'Up', color: COLORS[1], values: s.map((x) => x.up_bps) },
    ], { fmt: bps, stacked: false });
  }

  function renderTop(m) {
    setNum('members-total', m.total, count(m.total));
    fillTable($('top-members'), m.members || [], (x) => String(x.member_id), (x) => {
      const use = planUse(x);
      return {
        attrs: { 'data-member-id': x.member_id, class: x.status && x.status !== 'active' ? 'dim' : '' },
        cells: [
          cellNum(x.member_id, h('a', { href: '#/member/' + encodeURIComponent(x.member_id) }, String(x.member_id))),
          x.name || '',
          x.plan || '—',
          cellNum(x.down_bps, bps(x.down_bps), '', 'down-bps'),
          cellNum(x.up_bps, bps(x.up_bps), '', 'up-bps'),
          cellNum(use, use == null ? '—' : Math.round(use * 100) + ' %', use >= 0.9 ? 'warn' : ''),
          cellNum(x.queue_delay_us, us(x.queue_delay_us), x.queue_delay_us >= 20000 ? 'warn' : ''),
          cellNum(x.rtt_inside_us, us(x.rtt_inside_us), x.rtt_inside_us >= 30000 ? 'warn' : ''),
          cellNum(x.rtt_outside_us, us(x.rtt_outside_us), x.rtt_outside_us >= 150000 ? 'warn' : ''),
        ],
      };
    });
  }
  function planUse(x) {
    const a = x.plan_down_bps ? (x.down_bps || 0) / x.plan_down_bps : null;
    const b = x.plan_up_bps ? (x.up_bps || 0) / x.plan_up_bps : null;
    if (a == null && b == null) return null;
    return Math.max(a || 0, b || 0);
  }

  function renderDrops(dr) {
    const total = dr.total || {};
    const hist = dr.history || [];
    const lastRates = hist.length ? hist[hist.length - 1].drops || {} : {};
    const reasons = Object.keys(total).filter((k) => total[k] > 0 || lastRates[k] > 0);
    reasons.sort((a, b) => (total[b] || 0) - (total[a] || 0) || a.localeCompare(b));
    const zero = Object.keys(total).length - reasons.length;
    $('drops-note').textContent = reasons.length === 0 ? 'No drops since the daemon started.' :
      zero > 0 ? zero + ' other reason' + (zero > 1 ? 's' : '') + ' at 0.' : '';
    fillTable($('drops'), reasons, (k) => k, (k) => ({
      attrs: { 'data-reason': k },
      cells: [h('code', {}, k), cellNum(lastRates[k] || 0, rate(lastRates[k] || 0), '', 'rate'), cellNum(total[k], count(total[k]), '', 'total')],
    }));
    // Chart: the reasons with the most drops in the window, the rest as "other".
    const inWindow = {};
    for (const x of hist) for (const [k, v] of Object.entries(x.drops || {})) inWindow[k] = (inWindow[k] || 0) + (v || 0);
    const top = Object.keys(inWindow).filter((k) => inWindow[k] > 0).sort((a, b) => inWindow[b] - inWindow[a]);
    const shown = top.slice(0, top.length > 6 ? 5 : 6);
    const rest = top.slice(shown.length);
    const series = shown.map((k) => ({ name: k, label: k, color: colorOf('drops', k, shown), values: hist.map((x) => (x.drops || {})[k] || 0) }));
    if (rest.length) series.push({ name: 'other', label: rest.length + ' other', color: OTHER_COLOR, values: hist.map((x) => rest.reduce((a, k) => a + ((x.drops || {})[k] || 0), 0)) });
    lineChart($('drops-chart'), $('drops-legend'), hist.map((x) => x.t), series, { fmt: (v) => rate(v) + '/s', stacked: true, empty: 'no drops in the last 10 minutes' });
  }

  function renderTimeouts(tm) {
    const bounds = tm.bounds_s || [];
    const labels = bounds.map((b) => '≤' + secs(b)).concat(['>' + secs(bounds[bounds.length - 1] || 0)]);
    const series = (tm.series || []).map((x) => ({ key: x.protocol + '/' + x.state, counts: x.counts || [], total: (x.counts || []).reduce((a, b) => a + b, 0) }));
    series.sort((a, b) => b.total - a.total || a.key.localeCompare(b.key));
    const totals = labels.map((_, i) => series.reduce((a, x) => a + (x.counts[i] || 0), 0));
    // Table.
    const table = $('timeouts');
    const head = table.tHead.rows[0];
    const headKey = labels.join('|');
    if (head.dataset.key !== headKey) {
      head.replaceChildren(h('th', { scope: 'col' }, 'Protocol / state'), ...labels.map((l) => h('th', { scope: 'col', class: 'num', 'data-bucket': l }, l)), h('th', { scope: 'col', class: 'num' }, 'All'));
      head.dataset.key = headKey;
    }
    const rows = series.concat([{ key: 'total', counts: totals, total: totals.reduce((a, b) => a + b, 0) }]);
    fillTable(table, rows, (x) => x.key, (x) => ({
      attrs: { 'data-series': x.key, class: x.key === 'total' ? 'total-row' : '' },
      cells: [x.key === 'total' ? 'all flows' : x.key].concat(labels.map((l, i) => {
        const c = cellNum(x.counts[i] || 0, x.counts[i] ? count(x.counts[i]) : '·'); c.attrs['data-bucket'] = l; return c;
      }), [cellNum(x.total, count(x.total))]),
    }));
    // Chart: bars per bucket, stacked by the biggest series, the rest as "other".
    const shown = series.filter((x) => x.total > 0).slice(0, 7);
    const rest = series.filter((x) => x.total > 0).slice(7);
    const stacks = shown.map((x) => ({ label: x.key, color: colorOf('timeouts', x.key, shown.map((y) => y.key)), counts: x.counts }));
    if (rest.length) stacks.push({ label: rest.length + ' other', color: OTHER_COLOR, counts: labels.map((_, i) => rest.reduce((a, x) => a + (x.counts[i] || 0), 0)) });
    const log = $('timeouts-log').checked;
    $('timeouts-caption').textContent = log ? '(bar height log scale; the colours split each bar in proportion)' : '';
    barChart($('timeouts-chart'), $('timeouts-legend'), labels, totals, stacks, log);
  }

  function renderReloads(rl) {
    const list = rl.reloads || [];
    fillTable($('reloads'), list, (x) => x.at + '/' + x.generation + '/' + (x.refused ? 'r' : 'o'), (x) => ({
      attrs: { 'data-generation': x.generation, class: x.refused ? 'refused' : '' },
      cells: [
        { content: h('span', {}, clock(x.at, true), h('br'), h('span', { class: 'muted small' }, ago(x.at))), attrs: { 'data-value': x.at, class: 'when', title: new Date(x.at * 1000).toISOString() } },
        cellNum(x.generation, x.generation == null ? '—' : String(x.generation)),
        x.changes || '',
        cellNum(x.ended, x.ended == null ? '—' : count(x.ended)),
        cellNum(x.compile_ms, x.compile_ms == null ? '—' : x.compile_ms.toFixed(1) + ' ms'),
        { text: x.refused ? 'refused: ' + x.refused : 'ok', attrs: { 'data-field': 'result', class: x.refused ? 'bad' : 'good' } },
      ],
    }));
    if (!list.length) fillEmpty($('reloads'), 'No reloads since the daemon started.');
  }

  // --- member page
  function clearMember() {
    $('member-name').textContent = 'Member';
    $('member-id').textContent = state.memberId;
    $('member-error').hidden = true;
    $('member-body').hidden = false;
    for (const id of ['member-plan', 'member-down-bps', 'member-up-bps', 'member-queue-delay', 'member-shaper-drops', 'member-rtt-inside', 'member-rtt-outside', 'member-addresses', 'member-public-addresses']) setNum(id, '', '–');
    $('member-status').textContent = ''; $('member-plan-rates').textContent = '';
    $('member-diagnosis').replaceChildren(h('li', { 'data-kind': 'unknown' }, 'Asking the daemon…'));
    for (const id of ['member-today', 'member-month', 'member-total']) setUsage(id, null);
    $('member-forwards').tBodies[0].replaceChildren();
    $('member-flows').tBodies[0].replaceChildren();
    $('member-flows-note').textContent = '';
  }

  function renderMember(m, flows) {
    if (state.memberMissing) {
      $('member-error').hidden = false;
      $('member-error').textContent = state.memberMissing;
      $('member-body').hidden = true;
      $('member-name').textContent = 'Member';
      $('member-status').textContent = ''; $('member-status').className = 'badge';
      return;
    }
    if (!m) return;
    $('member-error').hidden = true; $('member-body').hidden = false;
    $('member-name').textContent = m.name || ('Member ' + m.member_id);
    $('member-id').textContent = m.member_id;
    document.title = (m.name || m.member_id) + ' · torwart';
    const st = $('member-status');
    st.textContent = m.status || ''; st.className = 'badge' + (!m.status ? '' : m.status === 'active' ? ' good' : ' bad');
    $('member-plan').textContent = m.plan || 'none (not shaped)';
    $('member-plan-rates').textContent = m.plan_down_bps || m.plan_up_bps ? '(' + bps(m.plan_down_bps) + ' down, ' + bps(m.plan_up_bps) + ' up)' : '';
    memberRate('down', m.down_bps, m.plan_down_bps);
    memberRate('up', m.up_bps, m.plan_up_bps);
    setNum('member-queue-delay', m.queue_delay_us, m.plan ? us(m.queue_delay_us) : '—');
    $('member-queue-delay').classList.toggle('warn', m.queue_delay_us >= 20000);
    setNum('member-shaper-drops', m.shaper_drops, count(m.shaper_drops || 0));
    setNum('member-rtt-inside', m.rtt_inside_us, m.rtt_inside_us == null ? 'not measured' : us(m.rtt_inside_us));
    setNum('member-rtt-outside', m.rtt_outside_us, m.rtt_outside_us == null ? 'not measured' : us(m.rtt_outside_us));
    $('member-rtt-inside').classList.toggle('warn', m.rtt_inside_us >= 30000);
    $('member-rtt-outside').classList.toggle('warn', m.rtt_outside_us >= 150000);
    diagnose(m);
    setUsage('member-today', m.today);
    setUsage('member-month', m.month);
    setUsage('member-total', { up_bytes: m.up_bytes, down_bytes: m.down_bytes });
    $('member-addresses').textContent = (m.addresses || []).join(', ') || '—';
    $('member-public-addresses').textContent = (m.public_addresses || []).join(', ') || '—';
    fillTable($('member-forwards'), m.forwards || [], (f) => f.protocol + f.public, (f) => ({ cells: [f.protocol, f.public, f.internal] }));
    if (!(m.forwards || []).length) fillEmpty($('member-forwards'), 'No port forwards.');
    if (flows) {
      const fl = flows.flows || [];
      $('member-flows-note').textContent = flows.truncated ? '(the first ' + count(fl.length) + '; the member has more)' : '(' + count(fl.length) + ')';
      fillTable($('member-flows'), fl, (f) => f.protocol + f.inside + f.outside, (f) => ({
        attrs: { 'data-field': 'flow' },
        cells: [f.protocol, f.state, cellNum(f.remaining_s, duration(f.remaining_s)), f.inside, f.outside, f.public || '—', cellNum(f.worker, String(f.worker))],
      }));
      if (!fl.length) fillEmpty($('member-flows'), 'No open flows.');
    }
  }
  function memberRate(dir, v, plan) {
    setNum('member-' + dir + '-bps', v, bps(v));
    const share = plan ? (v || 0) / plan : null;
    const bar = $('member-' + dir + '-bar');
    bar.style.width = share == null ? '0' : Math.min(100, share * 100).toFixed(1) + '%';
    bar.className = share >= 0.9 ? 'warn' : '';
    $('member-' + dir + '-share').textContent = share == null ? 'no plan limit' : Math.round(share * 100) + ' % of ' + bps(plan);
  }
  function setUsage(id, u) {
    const tr = $(id);
    const down = u ? u.down_bytes : null, up = u ? u.up_bytes : null;
    tr.dataset.down = down == null ? '' : down; tr.dataset.up = up == null ? '' : up;
    const cells = tr.querySelectorAll('td');
    const vals = [down, up, down == null && up == null ? null : (down || 0) + (up || 0)];
    cells.forEach((td, i) => { td.textContent = vals[i] == null ? '–' : bytes(vals[i]); td.dataset.value = vals[i] == null ? '' : vals[i]; });
  }

  // The one-line answers to "is it the network or my laptop?".
  function diagnose(m) {
    const items = [];
    const ri = m.rtt_inside_us, ro = m.rtt_outside_us, q = m.queue_delay_us;
    if (m.status && m.status !== 'active') items.push(['status', 'bad', 'The member is ' + m.status + ': torwart does not forward their traffic as usual.']);
    if (q != null && q >= 20000) items.push(['queue', 'warn', 'Queue delay ' + us(q) + ': torwart\'s shaper is holding their traffic (they are at their plan limit).']);
    else {
      const share = Math.max(m.plan_down_bps ? (m.down_bps || 0) / m.plan_down_bps : 0, m.plan_up_bps ? (m.up_bps || 0) / m.plan_up_bps : 0);
      if (share >= 0.9) items.push(['plan', 'warn', 'Using ' + Math.round(share * 100) + ' % of their plan right now: it is their plan limit, not a fault.']);
    }
    if (ri != null && ri >= 30000) items.push(['inside', 'warn', 'RTT inside ' + us(ri) + ' is high: the member\'s side (Wi-Fi/device) is slow.']);
    else if (ri != null && ri >= 10000) items.push(['inside', 'note', 'RTT inside ' + us(ri) + ' is a bit high (typical of busy Wi-Fi).']);
    if (ro != null && ro >= 150000) items.push(['outside', 'warn', 'RTT outside ' + us(ro) + ' is high: the far end/internet is slow, not the member\'s side.']);
    if (ri == null && ro == null) items.push(['unknown', 'note', 'RTT not measured yet (it comes from new TCP connections).']);
    if (!items.length) items.push(['ok', 'good', 'Nothing on the network side looks wrong: inside ' + us(ri) + ', outside ' + us(ro) + ', no queueing in the shaper. If the member still sees trouble, look at the device or the service they use.']);
    const ul = $('member-diagnosis');
    const sig = JSON.stringify(items);
    if (ul.dataset.sig === sig) return;
    ul.dataset.sig = sig;
    ul.replaceChildren(...items.map(([k, cls, t]) => h('li', { 'data-kind': k, class: cls }, t)));
  }

  // --- charts (SVG)
  const SVGNS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...kids) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) e.setAttribute(k, v);
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  function size(svg) {
    const r = svg.getBoundingClientRect();
    return { w: Math.max(200, Math.round(r.width) || 600), h: Math.max(100, Math.round(r.height) || 180) };
  }
  // A series keeps its colour while it is shown; a new one takes a colour no shown series has.
  function colorOf(chart, name, shownNames) {
    const m = state.colors[chart] || (state.colors[chart] = {});
    for (const k of Object.keys(m)) if (!shownNames.includes(k)) delete m[k];
    if (!m[name]) {
      const used = new Set(Object.values(m));
      m[name] = COLORS.find((c) => !used.has(c)) || OTHER_COLOR;
    }
    return m[name];
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // Lines (or stacked areas) over time; the legend shows the latest values, or those under the pointer.
  function lineChart(svg, legend, times, series, opt) {
    const { w, h: hh } = size(svg);
    const L = 74, R = 20, T = 8, B = 22;
    const pw = w - L - R, ph = hh - T - B;
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + hh);
    const n = times.length;
    const t1 = n ? times[n - 1] : Date.now() / 1000, t0 = t1 - 600;
    const x = (t) => L + (pw * (t - t0)) / 600;
    const stackTop = times.map((_, i) => series.reduce((a, sr) => a + (sr.values[i] || 0), 0));
    const max = opt.stacked ? Math.max(0, ...stackTop) : Math.max(0, ...series.flatMap((sr) => sr.values.filter((v) => v != null)));
    const ymax = niceMax(max);
    const y = (v) => T + ph - (ph * v) / ymax;
    const kids = [];
    for (let i = 0; i <= 4; i++) {
      const v = (ymax * i) / 4, yy = y(v);
      kids.push(s('line', { x1: L, x2: L + pw, y1: yy, y2: yy, class: i ? 'grid' : 'axis' }));
      kids.push(s('text', { x: L - 6, y: yy + 4, class: 'tick', 'text-anchor': 'end' }, opt.fmt(v)));
    }
    for (let m = Math.ceil(t0 / 120) * 120; m <= t1; m += 120) {
      kids.push(s('line', { x1: x(m), x2: x(m), y1: T, y2: T + ph, class: 'grid' }));
      kids.push(s('text', { x: x(m), y: hh - 6, class: 'tick', 'text-anchor': 'middle' }, clock(m).slice(0, 5)));
    }
    if (opt.stacked) {
      const base = times.map(() => 0);
      series.forEach((sr) => {
        const top = base.map((b, i) => b + (sr.values[i] || 0));
        if (n) {
          const up = times.map((t, i) => x(t).toFixed(1) + ',' + y(top[i]).toFixed(1));
          const down = times.map((t, i) => x(t).toFixed(1) + ',' + y(base[i]).toFixed(1)).reverse();
          kids.push(s('polygon', { points: up.concat(down).join(' '), fill: sr.color, 'fill-opacity': 0.75, class: 'series', 'data-series': sr.name }));
        }
        top.forEach((v, i) => { base[i] = v; });
      });
    } else {
      series.forEach((sr) => {
        let d = '', pen = false;
        times.forEach((t, i) => {
          const v = sr.values[i];
          if (i > 0 && t - times[i - 1] > 12) pen = false; // missing samples: a gap, not a line across
          if (v == null) { pen = false; return; }
          d += (pen ? 'L' : 'M') + x(t).toFixed(1) + ' ' + y(v).toFixed(1);
          pen = true;
        });
        kids.push(s('path', { d: d || 'M0 0', stroke: sr.color, fill: 'none', 'stroke-width': 2, class: 'series', 'data-series': sr.name }));
      });
    }
    if (!series.length || !n) kids.push(s('text', { x: L + pw / 2, y: T + ph / 2, class: 'empty', 'text-anchor': 'middle' }, opt.empty || 'no samples yet'));
    const id = svg.id;
    const hi = state.hover[id];
    const idx = hi != null && hi < n ? hi : n - 1;
    if (hi != null && hi < n) kids.push(s('line', { x1: x(times[hi]), x2: x(times[hi]), y1: T, y2: T + ph, class: 'cursor' }));
    svg.replaceChildren(...kids);
    // Pointer: show the values under it in the legend.
    if (!svg.dataset.hooked) {
      svg.dataset.hooked = '1';
      svg.addEventListener('mousemove', (ev) => {
        const c = svg._chart; if (!c || !c.times.length) return;
        const r = svg.getBoundingClientRect();
        const px = ((ev.clientX - r.left) * c.w) / r.width;
        const t = c.t0 + ((px - c.L) * 600) / c.pw;
        let best = 0;
        c.times.forEach((tt, i) => { if (Math.abs(tt - t) < Math.abs(c.times[best] - t)) best = i; });
        if (state.hover[svg.id] !== best) { state.hover[svg.id] = best; lineChart(...svg._args); }
      });
      svg.addEventListener('mouseleave', () => { delete state.hover[svg.id]; lineChart(...svg._args); });
    }
    svg._chart = { times, t0, L, pw, w };
    svg._args = [svg, legend, times, series, opt];
    const when = idx >= 0 && n ? (hi != null && hi < n ? 'at ' + clock(times[idx]) : 'now') : '';
    legend.replaceChildren(...series.map((sr) => h('span', { class: 'key' },
      h('i', { style: { background: sr.color } }), sr.label + ' ', h('b', { class: 'num' }, idx >= 0 && n ? opt.fmt(sr.values[idx] || 0) : '–'))),
    when ? h('span', { class: 'muted' }, when) : '');
  }

  // Bars per bucket, each split by series; log or linear height.
  function barChart(svg, legend, labels, totals, stacks, log) {
    const { w, h: hh } = size(svg);
    const L = 52, R = 6, T = 10, B = 24;
    const pw = w - L - R, ph = hh - T - B;
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + hh);
    const max = Math.max(1, ...totals);
    let ymax, y, ticks;
    if (log) {
      ymax = Math.pow(10, Math.ceil(Math.log10(max + 1)));
      const f = (v) => Math.log10(1 + v) / Math.log10(1 + ymax);
      y = (v) => T + ph - ph * f(v);
      ticks = [];
      for (let v = 1; v <= ymax; v *= 10) ticks.push(v);
      ticks.unshift(0);
    } else {
      ymax = Math.max(4, niceMax(max));
      y = (v) => T + ph - (ph * v) / ymax;
      ticks = [0, 1, 2, 3, 4].map((i) => (ymax * i) / 4);
    }
    const kids = [];
    for (const v of ticks) {
      kids.push(s('line', { x1: L, x2: L + pw, y1: y(v), y2: y(v), class: v ? 'grid' : 'axis' }));
      if (v || !log) kids.push(s('text', { x: L - 5, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, short(v)));
    }
    const bw = pw / labels.length;
    const every = bw < 34 ? 2 : 1;
    labels.forEach((lab, i) => {
      const x0 = L + i * bw + bw * 0.12, wd = bw * 0.76;
      const tot = totals[i] || 0;
      const g = s('g', { 'data-field': 'timeout-bucket', 'data-bucket': lab, 'data-count': tot });
      g.append(s('title', {}, lab + ': ' + count(tot) + ' flows' + stacks.filter((st) => st.counts[i]).map((st) => '\n' + st.label + ': ' + count(st.counts[i])).join('')));
      if (tot > 0) {
        const top = y(tot), height = T + ph - top;
        let acc = 0;
        for (const st of stacks) {
          const c = st.counts[i] || 0; if (!c) continue;
          const segH = (height * c) / tot;
          g.append(s('rect', { x: x0.toFixed(1), y: (T + ph - acc - segH).toFixed(1), width: wd.toFixed(1), height: Math.max(0.5, segH).toFixed(1), fill: st.color }));
          acc += segH;
        }
      } else {
        g.append(s('rect', { x: x0.toFixed(1), y: T + ph - 0.5, width: wd.toFixed(1), height: 0.5, fill: '#ccc' }));
      }
      kids.push(g);
      if (i % every === 0 || i === labels.length - 1) kids.push(s('text', { x: (L + i * bw + bw / 2).toFixed(1), y: hh - 7, class: 'tick', 'text-anchor': 'middle' }, lab));
    });
    svg.replaceChildren(...kids);
    legend.replaceChildren(...stacks.map((st) => h('span', { class: 'key' }, h('i', { style: { background: st.color } }), st.label)));
  }

  // --- DOM helpers
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'style' && typeof v === 'object') Object.assign(e.style, v); // CSSOM: fine under a strict CSP
      else if (v != null && v !== '') e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null && k !== '') e.append(k);
    return e;
  }
  // Children of `box` kept by key: rebuilt only when their markup changes.
  function fillKeyed(box, items, key, make) {
    const old = new Map();
    for (const el of Array.from(box.children)) old.set(el.dataset.key, el);
    items.forEach((it, i) => {
      const k = key(it);
      const fresh = make(it);
      fresh.dataset.key = k;
      let el = old.get(k);
      old.delete(k);
      if (!el || el.outerHTML !== fresh.outerHTML) { if (el) el.replaceWith(fresh); el = fresh; }
      if (box.children[i] !== el) box.insertBefore(el, box.children[i] || null);
    });
    for (const el of old.values()) el.remove();
  }
  // Sets an element's text and its raw value (data-value), only when changed.
  function setNum(id, raw, text) {
    const e = $(id);
    if (!e) return;
    const v = raw == null ? '' : String(raw);
    if (e.dataset.value !== v) e.dataset.value = v;
    if (e.textContent !== text) e.textContent = text;
  }
  function cellNum(raw, content, cls, field) {
    return { content, attrs: { class: 'num' + (cls ? ' ' + cls : ''), 'data-value': raw == null ? '' : raw, 'data-field': field } };
  }
  // Fills a table's tbody: one row per item, kept by key (focus and selection survive updates).
  function fillTable(table, items, key, row) {
    const tb = table.tBodies[0];
    const old = new Map();
    for (const tr of Array.from(tb.rows)) if (tr.dataset.key != null) old.set(tr.dataset.key, tr);
    const seen = new Set();
    items.forEach((it, i) => {
      let k = key(it);
      while (seen.has(k)) k += '+';
      seen.add(k);
      const spec = row(it);
      let tr = old.get(k);
      old.delete(k);
      if (!tr) { tr = document.createElement('tr'); tr.dataset.key = k; }
      const asig = JSON.stringify(spec.attrs || {});
      if (tr.dataset.asig !== asig) {
        for (const a of Array.from(tr.attributes)) if (a.name !== 'data-key') tr.removeAttribute(a.name);
        for (const [a, v] of Object.entries(spec.attrs || {})) if (v != null && v !== '') tr.setAttribute(a, v);
        tr.dataset.asig = asig;
      }
      // Cell by cell: an unchanged cell (a focused link, a selection) is left alone.
      spec.cells.forEach((c, j) => {
        const td = c == null || typeof c !== 'object' || c instanceof Node ? h('td', {}, c == null ? '' : c) : h('td', c.attrs || {}, c.content != null ? c.content : c.text);
        const old = tr.cells[j];
        if (!old) tr.append(td);
        else if (old.outerHTML !== td.outerHTML) old.replaceWith(td);
      });
      while (tr.cells.length > spec.cells.length) tr.lastElementChild.remove();
      if (tb.rows[i] !== tr) tb.insertBefore(tr, tb.rows[i] || null);
    });
    for (const tr of old.values()) tr.remove();
    for (const tr of Array.from(tb.rows)) if (tr.dataset.key == null) tr.remove();
  }
  function fillEmpty(table, text) {
    const tb = table.tBodies[0];
    const cols = table.tHead.rows[0].cells.length;
    tb.replaceChildren(h('tr', { class: 'empty' }, h('td', { colspan: cols }, text)));
  }

  // --- formatting
  const NF = new Intl.NumberFormat('en-US');
  function count(n) { return n == null ? '–' : NF.format(Math.round(n)); }
  function sig3(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }
  function scaled(v, units, step) {
    if (v == null || isNaN(v)) return '–';
    let i = 0, x = Math.abs(v);
    while (x >= step && i < units.length - 1) { x /= step; i++; }
    return (v < 0 ? '-' : '') + (i === 0 && Number.isInteger(x) ? String(x) : sig3(x)) + ' ' + units[i];
  }
  function bps(v) { return scaled(v, ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s'], 1000); }
  function bytes(v) { return scaled(v, ['B', 'kB', 'MB', 'GB', 'TB', 'PB'], 1000); }
  function rate(v) {
    if (v == null) return '–';
    if (v === 0) return '0';
    if (v < 10) return v.toFixed(v < 1 ? 2 : 1);
    return v < 10000 ? NF.format(Math.round(v)) : scaled(v, ['', 'k', 'M', 'G'], 1000).replace(/ /, '').trim();
  }
  function short(v) { return v < 1000 ? String(Math.round(v)) : scaled(v, ['', 'k', 'M', 'G'], 1000).replace(' ', ''); }
  function us(v) {
    if (v == null) return '–';
    if (v < 1000) return Math.round(v) + ' µs';
    if (v < 1e6) return (v / 1000).toFixed(v < 10000 ? 1 : 0) + ' ms';
    return (v / 1e6).toFixed(2) + ' s';
  }
  function secs(n) {
    if (n == null) return '–';
    if (n < 60) return Math.round(n) + 's';
    if (n < 3600) return (n % 60 ? (n / 60).toFixed(1) : n / 60) + 'm';
    if (n < 86400 * 2) return (n % 3600 ? (n / 3600).toFixed(1) : n / 3600) + 'h';
    return (n / 86400).toFixed(n % 86400 ? 1 : 0) + 'd';
  }
  function duration(s) {
    if (s == null) return '–';
    const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d ? d + 'd ' + hr + 'h' : hr ? hr + 'h ' + m + 'm' : m ? m + 'm ' + Math.floor(s % 60) + 's' : Math.floor(s) + 's';
  }
  function pad(n) { return String(n).padStart(2, '0'); }
  function clock(t, withDate) {
    const d = new Date(t * 1000);
    const hms = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    return withDate ? d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + hms : hms;
  }
  function ago(t) {
    const s = Math.max(0, Date.now() / 1000 - t);
    if (s < 60) return Math.round(s) + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 172800) return Math.round(s / 3600) + ' h ago';
    return Math.round(s / 86400) + ' days ago';
  }

  // --- start
  function start() {
    setupToken();
    $('host').textContent = location.host;
    $('member-search').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = $('member-search-id').value.trim();
      if (!/^[0-9]+$/.test(v)) { $('member-search-id').setCustomValidity('a member id is a number'); $('member-search-id').reportValidity(); return; }
      $('member-search-id').setCustomValidity('');
      location.hash = '#/member/' + v;
    });
    $('member-search-id').addEventListener('input', () => $('member-search-id').setCustomValidity(''));
    $('top-members').addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr[data-member-id]');
      if (tr && !ev.target.closest('a')) location.hash = '#/member/' + tr.dataset.memberId;
    });
    $('timeouts-log').addEventListener('change', safeRender);
    window.addEventListener('hashchange', route);
    let rs = null;
    window.addEventListener('resize', () => { clearTimeout(rs); rs = setTimeout(safeRender, 150); });
    route(); // renders and starts polling
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
