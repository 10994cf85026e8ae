// scanstream dashboard: one WebSocket subscription kept live, with the same reconnect
// and resume rules as the Rust client (src/client), and a few HTTP calls for control.
'use strict';
(() => {
  const SUB = 'dashboard';
  const FEED_MAX = 100;
  // Results come in bursts (one per scan cycle); drawing at most this often keeps the
  // page responsive on a slow machine while still looking live.
  const RENDER_EVERY_MS = 100;
  const ALERTS_MAX = 100;
  const UNACKED_MAX = 10000;
  const LATENCY_WINDOW = 500;
  const SEQS_KEPT = 20000;
  // The Rust client's defaults: 0.5 s doubling to 20 s, full jitter.
  const BACKOFF_INITIAL_MS = 500;
  const BACKOFF_MAX_MS = 20000;
  // Browsers answer the server's pings without telling the page, so the page pings too
  // and gives up on a connection that has been silent for the server's ping interval
  // (25 s) plus a margin, as the Rust client does.
  const PING_EVERY_MS = 15000;
  // A connection that leaves a ping unanswered this long is given up (ticks of a timer
  // in a background tab may come only once a minute; a late tick is no silence).
  const PONG_WAIT_MS = 15000;
  // How long the page waits for its HTTP questions about a refused connection.
  const PROBE_TIMEOUT_MS = 5000;
  const FLASH_MS = 700;
  const ROWS_SHOWN = 100;
  const LEAVE_MS = 600;

  const $ = (sel) => document.querySelector(sel);
  const token = takeToken();
  const wsUrl = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host +
    '/stream' + (token ? '?token=' + encodeURIComponent(token) : '');

  // The token comes in the page address (`?token=` or `#token=`); it is kept for this tab
  // and taken out of the address bar, history and Referer headers.
  function takeToken() {
    const fromQuery = new URLSearchParams(location.search).get('token');
    const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
    const given = fromQuery || fromHash;
    try {
      if (given) sessionStorage.setItem('scanstream-token', given);
      const kept = given || sessionStorage.getItem('scanstream-token') || '';
      if (given) history.replaceState(null, '', location.pathname);
      return kept;
    } catch (_) {
      return given || ''; // storage refused (a private window): the address keeps it
    }
  }

  const st = {
    ws: null,
    conn: 'connecting',
    connNote: '',
    attempt: 0, // reconnect attempts since the last open
    retryAt: 0,
    opened: false, // has any connection opened yet
    pingSentAt: 0, // an unanswered ping's time, 0 when none is out
    epoch: null,
    lastSeq: null, // the last result seq applied to the table, in `epoch`
    // The table came from a snapshot (and results since) for `filters` in `epoch`, so a
    // reconnect may resume it; else the next subscribe asks for a snapshot.
    tableGood: false,
    filters: {}, // what the server accepted
    desired: {}, // what the form asks for
    subscribeId: null, // the newest subscribe request
    connSubscribed: false, // the server holds our subscription on this connection
    alertsGen: 0,
    requestId: 0,
    pending: new Map(), // request id -> what it was for
    rows: new Map(), // "SYM/scan" -> result
    dirty: new Set(),
    orderDirty: true,
    rowEls: new Map(),
    sort: { field: 'score', dir: -1 },
    feedQueue: [],
    alerts: new Map(), // alert_id -> alert
    unacked: new Set(),
    unackedMore: false, // the server holds more unacked alerts than the page listed
    loading: null, // alerts and acks streamed in while the lists are being fetched
    alertsDirty: true,
    latencies: [],
    buckets: new Array(60).fill(0),
    bucketSecond: Math.floor(Date.now() / 1000),
    received: 0,
    duplicates: 0,
    gaps: 0,
    reconnects: 0,
    seqs: [],
    frame: 0,
    renderedAt: 0,
  };

  // ---- connection ----------------------------------------------------------------

  // Whether a close code says to come back (PROTOCOL.md "Close codes"; where it is
  // silent, as the Rust client's `should_reconnect`).
  function shouldReconnect(code) {
    if (code === 1000) return false;
    if (code === 1002 || code === 1003 || (code >= 1007 && code <= 1010)) return false;
    if (code >= 4500 && code <= 4999) return false;
    return true;
  }

  function backoffDelay(attempt) {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** Math.min(attempt - 1, 30));
    return Math.random() * ceiling;
  }

  function setConn(state, note) {
    st.conn = state;
    st.connNote = note || '';
    renderConn();
  }

  function connect() {
    setConn(st.opened ? 'reconnecting' : 'connecting', 'connecting');
    let ws;
    try {
      ws = new WebSocket(wsUrl);
    } catch (e) {
      setConn('closed', String(e.message || e));
      return;
    }
    st.ws = ws;
    let wasOpen = false;
    ws.onopen = () => {
      wasOpen = true;
      if (st.opened) st.reconnects += 1;
      st.opened = true;
      st.attempt = 0;
      st.pingSentAt = 0;
      st.connSubscribed = false;
      setConn('live');
      subscribe();
    };
    ws.onmessage = (ev) => {
      st.pingSentAt = 0;
      onMessage(ev.data, performance.timeOrigin + performance.now());
    };
    ws.onclose = (ev) => {
      if (st.ws !== ws) return;
      st.ws = null;
      st.pending.clear();
      if (!wasOpen) {
        // A refused upgrade looks like 1006 to a page; ask over plain HTTP why.
        probeRefusal().then((why) => {
          if (why) {
            setConn('closed', why);
          } else {
            retry(ev.code);
            // A page whose origin the server does not list gets a bare failure too.
            if (st.attempt >= 5) st.connNote += '; if the server has --allow-origin, it must list this page\'s origin';
          }
        });
        return;
      }
      if (!shouldReconnect(ev.code)) {
        setConn('closed', `closed by the server (${ev.code}${ev.reason ? ': ' + ev.reason : ''})`);
        return;
      }
      retry(ev.code);
    };
  }

  function retry(code) {
    st.attempt += 1;
    const delay = backoffDelay(st.attempt);
    st.retryAt = Date.now() + delay;
    setConn('reconnecting', code ? `lost (${code})` : '');
    setTimeout(connect, delay);
  }

  // 401 and 403 mean no retry will succeed; anything else (a server that is down) may pass.
  async function probeRefusal() {
    try {
      const res = await fetch('/stream', {
        headers: authHeaders(),
        signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
      });
      if (res.status === 401) return 'unauthorized: add ?token=… to the page address';
      if (res.status === 403) return 'this page\'s origin is not allowed by the server';
    } catch (_) {
      // Down: retry.
    }
    return null;
  }

  function dropConnection(why) {
    const ws = st.ws;
    if (!ws) return;
    st.ws = null;
    st.pending.clear();
    ws.onclose = null;
    ws.onmessage = null;
    ws.close();
    retry(why);
  }

  function send(type, data, purpose) {
    if (!st.ws || st.ws.readyState !== WebSocket.OPEN) return null;
    const id = `${type}-${++st.requestId}`;
    if (purpose) st.pending.set(id, purpose);
    const msg = { type, id };
    if (data !== undefined) msg.data = data;
    st.ws.send(JSON.stringify(msg));
    return id;
  }

  // Resume from the last result seen when the table is good for the filters asked for;
  // else start from a snapshot, which replaces the table.
  function subscribe() {
    const filters = st.desired;
    const data = { subscription: SUB, filters };
    const resume = st.tableGood && sameFilters(filters, st.filters) && st.lastSeq !== null;
    if (resume) {
      data.since = st.lastSeq;
      data.epoch = st.epoch;
    } else {
      data.snapshot = true;
    }
    const id = send('subscribe', data, { kind: 'subscribe', resume, filters });
    if (id) st.subscribeId = id;
  }

  const sameFilters = (a, b) => JSON.stringify(a) === JSON.stringify(b);

  setInterval(() => {
    if (!st.ws || st.ws.readyState !== WebSocket.OPEN) return;
    if (st.pingSentAt && Date.now() - st.pingSentAt > PONG_WAIT_MS) {
      dropConnection(1006);
    } else if (!st.pingSentAt) {
      st.pingSentAt = Date.now();
      send('ping');
    }
  }, PING_EVERY_MS);

  // ---- messages ------------------------------------------------------------------

  function onMessage(text, rxMs) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (_) {
      return; // The server sends JSON only; nothing sensible to do with anything else.
    }
    const purpose = msg.id ? st.pending.get(msg.id) : undefined;
    if (purpose) st.pending.delete(msg.id);
    const d = msg.data || {};
    switch (msg.type) {
      case 'result': onResult(d, msg.timestamp, rxMs); break;
      case 'snapshot': if (d.subscription === SUB) onSnapshot(d, msg.id); break;
      case 'subscribed': if (d.subscription === SUB) onSubscribed(d, purpose); break;
      case 'status': onStatus(d, purpose); break;
      case 'alert': addAlert(d); break;
      case 'acked': onAcked(d); break;
      case 'error': onError(d, purpose); break;
      default: break;
    }
  }

  function onSubscribed(d, purpose) {
    if (!purpose || purpose.kind !== 'subscribe') return;
    $('#filter-error').textContent = '';
    st.filters = purpose.filters;
    st.epoch = d.epoch;
    if (!st.connSubscribed) {
      st.connSubscribed = true;
      // Alerts raised while the page was away are not replayed: fetch them, now that
      // the stream carries every new one.
      loadAlerts();
    }
    if (purpose.resume && !d.recovered) {
      // Results were lost (a new server run, or history too short): a replay cannot
      // repair a table that missed a clear, so start again from a snapshot.
      st.gaps += 1;
      st.tableGood = false;
      subscribe();
      return;
    }
    // A snapshot follows and stands for everything up to this seq; until it has come,
    // the table is not one a later connection could resume.
    if (!purpose.resume) {
      st.lastSeq = d.seq;
      st.tableGood = false;
    }
  }

  function onSnapshot(d, id) {
    st.rows.clear();
    for (const r of d.results || []) st.rows.set(keyOf(r), r);
    st.lastSeq = d.seq;
    // Only the answer to the newest request makes the table good: an older one was for
    // other filters.
    if (id === st.subscribeId) st.tableGood = true;
    for (const key of st.rowEls.keys()) st.dirty.add(key);
    st.orderDirty = true;
    schedule();
  }

  function onResult(d, timestamp, rxMs) {
    // An update that drops out of the filters names the subscription in `left`: its row
    // goes, so the table stays equal to a fresh snapshot (PROTOCOL.md, "Leaving a filter").
    const leaving = Array.isArray(d.left) && d.left.includes(SUB);
    if (!leaving && (!Array.isArray(d.subscriptions) || !d.subscriptions.includes(SUB))) return;
    if (st.lastSeq !== null && d.seq <= st.lastSeq) {
      st.duplicates += 1;
      return;
    }
    st.lastSeq = d.seq;
    st.received += 1;
    st.seqs.push(d.seq);
    if (st.seqs.length > SEQS_KEPT * 1.5) st.seqs.splice(0, st.seqs.length - SEQS_KEPT);
    const produced = parseTimestamp(timestamp);
    if (produced !== null) {
      st.latencies.push(rxMs - produced);
      if (st.latencies.length > LATENCY_WINDOW * 2) st.latencies.splice(0, LATENCY_WINDOW);
    }
    countRate();
    d.leaving = leaving;
    st.feedQueue.push(d);
    // A hidden tab draws nothing; keep only what the feed can show.
    if (st.feedQueue.length > FEED_MAX * 2) st.feedQueue.splice(0, st.feedQueue.length - FEED_MAX);
    // Ad-hoc results report on request and are not part of the open opportunities
    // (the server keeps them out of snapshots), so they go to the feed only.
    if (!d.adhoc) {
      const key = keyOf(d);
      if (d.event === 'clear' || leaving) {
        st.rows.delete(key);
      } else {
        d.flashAt = d.event === 'update' ? Date.now() : 0;
        st.rows.set(key, d);
      }
      st.dirty.add(key);
      st.orderDirty = true;
    }
    schedule();
  }

  function onStatus(d, purpose) {
    renderStatus(d);
    if (purpose && purpose.kind === 'adhoc') {
      const n = purpose.symbols.length;
      if (d.phase === 'queued') {
        $('#adhoc-reply').textContent = `queued ${n} symbol${n === 1 ? '' : 's'}: ${purpose.symbols.join(' ')}`;
        st.pending.set(purpose.id, purpose); // the `adhoc` status follows when it is done
      } else if (d.phase === 'adhoc') {
        $('#adhoc-reply').textContent = `scanned ${d.symbols ?? n} symbols: ${d.results ?? 0} result${d.results === 1 ? '' : 's'}`;
      }
    }
  }

  function onError(d, purpose) {
    const text = `${d.code}: ${d.message}`;
    if (purpose && purpose.kind === 'subscribe') {
      // The server left the subscription as it was: so does the page.
      $('#filter-error').textContent = text;
      st.desired = st.filters;
      writeFilters($('#filters'), st.filters);
      if (!st.connSubscribed) subscribe();
    } else if (purpose && purpose.kind === 'adhoc') {
      $('#adhoc-reply').textContent = text;
    } else if (purpose && purpose.kind === 'ack') {
      $('#control-error').textContent = text;
    }
  }

  // RFC 3339 with up to nanoseconds, as milliseconds since the epoch (fractional).
  function parseTimestamp(ts) {
    if (typeof ts !== 'string') return null;
    const m = /^(.{19})(?:\.(\d+))?Z$/.exec(ts);
    if (!m) return null;
    const whole = Date.parse(m[1] + 'Z');
    if (Number.isNaN(whole)) return null;
    const frac = m[2] ? Number('0.' + m[2]) * 1000 : 0;
    return whole + frac;
  }

  function countRate() {
    const now = Math.floor(Date.now() / 1000);
    advanceBuckets(now);
    st.buckets[st.buckets.length - 1] += 1;
  }

  function advanceBuckets(now) {
    const steps = Math.min(now - st.bucketSecond, st.buckets.length);
    for (let i = 0; i < steps; i++) {
      st.buckets.shift();
      st.buckets.push(0);
    }
    if (now > st.bucketSecond) st.bucketSecond = now;
  }

  const keyOf = (r) => `${r.symbol}/${r.scan}`;

  // ---- alerts --------------------------------------------------------------------

  function addAlert(a) {
    if (!a || typeof a.alert_id !== 'string') return;
    if (st.loading) st.loading.push(a);
    st.alerts.set(a.alert_id, a);
    if (a.acknowledged) st.unacked.delete(a.alert_id);
    else st.unacked.add(a.alert_id);
    // The server keeps so many alerts at most: older ones can no longer be acknowledged.
    for (const id of st.unacked) {
      if (st.unacked.size <= UNACKED_MAX) break;
      st.unacked.delete(id);
      st.unackedMore = true;
    }
    trimAlerts();
    st.alertsDirty = true;
    schedule();
  }

  function onAcked(a) {
    if (!a || typeof a.alert_id !== 'string') return;
    if (st.loading) st.loading.push({ ...a, acknowledged: true });
    const known = st.alerts.get(a.alert_id);
    if (known) st.alerts.set(a.alert_id, { ...known, ...a, acknowledged: true });
    st.unacked.delete(a.alert_id);
    st.alertsDirty = true;
    schedule();
  }

  function trimAlerts() {
    if (st.alerts.size <= ALERTS_MAX) return;
    const ids = [...st.alerts.keys()].sort((x, y) => alertNumber(y) - alertNumber(x));
    for (const id of ids.slice(ALERTS_MAX)) st.alerts.delete(id);
  }

  const alertNumber = (id) => Number(id.replace(/^\D+/, '')) || 0;

  // The newest alerts and the unacked ones, fetched on every (re)connect: alerts raised
  // while the page was away are not replayed over the stream.
  async function loadAlerts() {
    const limit = 1000;
    const streamed = [];
    const gen = ++st.alertsGen;
    st.loading = streamed;
    try {
      const [recent, unacked] = await Promise.all([
        getJson(`/alerts?limit=${ALERTS_MAX}`),
        getJson(`/alerts?unacked=true&limit=${limit}`),
      ]);
      if (gen !== st.alertsGen) return; // a newer load is under way
      st.unacked = new Set(unacked.map((a) => a.alert_id));
      st.unackedMore = unacked.length >= limit;
      for (const a of [...recent].reverse()) st.alerts.set(a.alert_id, a);
      // What streamed in meanwhile may be newer than either list.
      for (const a of streamed) {
        if (a.acknowledged) st.unacked.delete(a.alert_id);
        else st.unacked.add(a.alert_id);
        if (st.alerts.has(a.alert_id) || !a.acknowledged) st.alerts.set(a.alert_id, { ...st.alerts.get(a.alert_id), ...a });
      }
      trimAlerts();
      st.alertsDirty = true;
      schedule();
    } catch (e) {
      $('#control-error').textContent = `alerts: ${e.message}`;
    } finally {
      if (st.loading === streamed) st.loading = null;
    }
  }

  function ack(id) {
    if (send('ack', { alert_id: id }, { kind: 'ack' })) return;
    post(`/alerts/${encodeURIComponent(id)}/ack`).then(onAcked, (e) => {
      $('#control-error').textContent = `ack: ${e.message}`;
    });
  }

  // ---- HTTP ----------------------------------------------------------------------

  function authHeaders() {
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  async function getJson(path) {
    return answer(await fetch(path, { headers: authHeaders(), cache: 'no-store' }));
  }

  async function post(path, body) {
    const headers = authHeaders();
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    return answer(await fetch(path, {
      method: 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body),
    }));
  }

  async function answer(res) {
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new Error(body && body.message ? `${res.status} ${body.message}` : `HTTP ${res.status}`);
    return body;
  }

  async function control(path) {
    $('#control-error').textContent = '';
    try {
      renderStatus(await post(path));
    } catch (e) {
      $('#control-error').textContent = e.message;
    }
  }

  // ---- rendering -----------------------------------------------------------------

  function schedule() {
    if (st.frame) return;
    const wait = Math.max(0, st.renderedAt + RENDER_EVERY_MS - performance.now());
    st.frame = setTimeout(() => requestAnimationFrame(render), wait);
  }

  function render() {
    st.frame = 0;
    st.renderedAt = performance.now();
    renderRows();
    renderFeed();
    if (st.alertsDirty) renderAlerts();
  }

  function renderConn() {
    const el = $('#conn');
    el.dataset.state = st.conn;
    let text = st.conn;
    if (st.conn === 'reconnecting' && st.retryAt > Date.now()) {
      text = `reconnecting in ${((st.retryAt - Date.now()) / 1000).toFixed(1)} s (attempt ${st.attempt})`;
      if (st.connNote) text += `: ${st.connNote}`;
    } else if (st.connNote && st.conn !== 'live') {
      text = `${st.conn}: ${st.connNote}`;
    }
    el.textContent = text;
  }

  function renderStatus(d) {
    if (!d || typeof d !== 'object') return;
    const state = $('#scanner-state');
    if (d.state) {
      state.textContent = d.state;
      state.dataset.state = d.state;
    }
    if (d.health) $('#scanner-health').hidden = d.health !== 'degraded';
    if (Number.isFinite(d.total)) {
      const p = $('#progress');
      p.max = Math.max(d.total, 1);
      p.value = Math.min(d.scanned || 0, p.max);
    }
    if (d.cycle !== undefined) $('#cycle').textContent = d.cycle;
    if (d.last_cycle_ms !== undefined) $('#cycle-ms').textContent = Number(d.last_cycle_ms).toFixed(2);
    if (d.results_total !== undefined) $('#results-total').textContent = d.results_total.toLocaleString();
    if (d.subscribers !== undefined) $('#subscribers').textContent = d.subscribers;
    if (Number.isFinite(d.lag_ms)) {
      const lag = $('#lag');
      lag.textContent = d.lag_ms < 10 ? `${d.lag_ms.toFixed(1)} ms` : `${Math.round(d.lag_ms)} ms`;
      // The server's default max_lag: past it, updates are being conflated.
      lag.dataset.state = d.lag_ms > 100 ? 'lagging' : 'ok';
    }
  }

  const fmt = (x, digits) => (typeof x === 'number' ? x.toFixed(digits) : '–');

  function fillRow(tr, r) {
    // A custom scan's result says why it fired: its indicators, on hover.
    tr.title = r.values
      ? Object.entries(r.values).map(([k, v]) => `${k} ${v === null ? '–' : v}`).join('\n')
      : '';
    tr.dataset.symbol = r.symbol;
    tr.dataset.scan = r.scan;
    tr.dataset.score = r.score;
    tr.dataset.price = r.price;
    tr.dataset.change = r.change_pct;
    tr.dataset.volumeRatio = r.volume_ratio;
    const c = tr.cells;
    c[0].textContent = r.symbol;
    c[1].textContent = r.scan.replace(/_/g, ' ');
    c[2].textContent = fmt(r.score, 2);
    c[3].textContent = fmt(r.price, 2);
    c[4].textContent = (r.change_pct > 0 ? '+' : '') + fmt(r.change_pct, 2);
    c[4].className = 'chg ' + (r.change_pct > 0 ? 'up' : r.change_pct < 0 ? 'down' : '');
    c[5].textContent = fmt(r.volume_ratio, 2);
    c[6].textContent = fmt(r.rsi, 1);
  }

  function newRow(key) {
    const tr = document.createElement('tr');
    tr.dataset.key = key;
    for (const cls of ['sym', 'scan', 'score', 'price', 'chg', 'vr', 'rsi']) {
      const td = document.createElement('td');
      td.className = cls;
      tr.appendChild(td);
    }
    return tr;
  }

  // Only the first ROWS_SHOWN rows in the current order are drawn: a browser repaints a
  // long table on every change, and the top of the list is what a trader reads. The
  // model behind it holds every open opportunity.
  function renderRows() {
    if (st.dirty.size === 0 && !st.orderDirty) return;
    const { field, dir } = st.sort;
    const sorted = [...st.rows.entries()].sort(
      ([ka, a], [kb, b]) => dir * ((a[field] ?? 0) - (b[field] ?? 0)) || (ka < kb ? -1 : ka > kb ? 1 : 0),
    );
    const shown = sorted.slice(0, ROWS_SHOWN);
    const shownKeys = new Set(shown.map(([key]) => key));
    for (const [key, tr] of st.rowEls) {
      if (shownKeys.has(key)) continue;
      st.rowEls.delete(key);
      if (st.rows.has(key)) {
        tr.remove(); // still open, only pushed below the fold
      } else {
        tr.classList.add('leaving');
        tr.classList.remove('flash');
        setTimeout(() => tr.remove(), LEAVE_MS);
      }
    }
    const tbody = $('#opps tbody');
    const now = Date.now();
    let ref = tbody.firstChild;
    for (const [key, r] of shown) {
      let tr = st.rowEls.get(key);
      if (!tr) {
        tr = newRow(key);
        st.rowEls.set(key, tr);
        fillRow(tr, r);
      } else if (st.dirty.has(key)) {
        fillRow(tr, r);
      }
      if (r.flashAt && now - r.flashAt < FLASH_MS) tr.classList.add('flash');
      if (tr === ref) {
        ref = ref.nextSibling;
      } else {
        tbody.insertBefore(tr, ref);
      }
    }
    st.dirty.clear();
    st.orderDirty = false;
    $('#opp-count').textContent = st.rows.size;
    $('#opp-more').textContent = st.rows.size > shown.length
      ? `${shown.length} of ${st.rows.size} shown; filters narrow the list`
      : '';
  }

  // Flashes end on a timer rather than on the next result, so a quiet row stops flashing.
  setInterval(() => {
    const now = Date.now();
    for (const tr of document.querySelectorAll('#opps tr.flash')) {
      const r = st.rows.get(tr.dataset.key);
      if (!r || now - (r.flashAt || 0) >= FLASH_MS) tr.classList.remove('flash');
    }
  }, 250);

  function renderFeed() {
    if (st.feedQueue.length === 0) return;
    const feed = $('#feed');
    const items = st.feedQueue.splice(0).slice(-FEED_MAX);
    const frag = document.createDocumentFragment();
    for (const r of items.reverse()) {
      const li = document.createElement('li');
      li.dataset.seq = r.seq;
      const label = r.leaving ? 'left' : r.event;
      li.dataset.event = label;
      const ev = document.createElement('span');
      ev.className = 'ev';
      ev.textContent = label;
      const what = document.createElement('span');
      what.textContent = `${r.symbol} ${r.scan.replace(/_/g, ' ')} ${fmt(r.score, 2)} @ ${fmt(r.price, 2)}`;
      li.append(ev, what);
      if (r.adhoc) {
        const tag = document.createElement('span');
        tag.className = 'adhoc-tag';
        tag.textContent = 'ad-hoc';
        li.append(tag);
      }
      frag.appendChild(li);
    }
    feed.prepend(frag);
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  }

  function renderAlerts() {
    st.alertsDirty = false;
    const list = $('#alerts');
    const alerts = [...st.alerts.values()].sort((a, b) => alertNumber(b.alert_id) - alertNumber(a.alert_id));
    const frag = document.createDocumentFragment();
    for (const a of alerts) {
      const li = document.createElement('li');
      li.dataset.alertId = a.alert_id;
      li.dataset.severity = a.severity;
      const unacked = st.unacked.has(a.alert_id) && !a.acknowledged;
      if (unacked) li.classList.add('unacked');
      const sev = document.createElement('span');
      sev.className = 'sev';
      sev.textContent = a.severity;
      const msg = document.createElement('span');
      msg.className = 'msg';
      msg.textContent = a.message;
      msg.title = `${a.rule} · ${a.created}`;
      li.append(sev, msg);
      if (unacked) {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'ack';
        b.textContent = 'Ack';
        b.dataset.alertId = a.alert_id;
        li.append(b);
      } else {
        li.append(document.createElement('span'));
      }
      frag.appendChild(li);
    }
    list.replaceChildren(frag);
    $('#unacked-count').textContent = st.unacked.size + (st.unackedMore ? '+' : '');
  }

  function percentile(sorted, p) {
    if (sorted.length === 0) return null;
    return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  }

  function renderMeters() {
    const lat = st.latencies.slice(-LATENCY_WINDOW).sort((a, b) => a - b);
    const show = (ms) => (ms === null ? '–' : ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(0)} ms`);
    $('#lat-p50').textContent = show(percentile(lat, 0.5));
    $('#lat-p99').textContent = show(percentile(lat, 0.99));
    advanceBuckets(Math.floor(Date.now() / 1000));
    // Results come in bursts, one per scan cycle: average the last five whole seconds
    // (the current one is still filling).
    const whole = st.buckets.slice(-6, -1);
    $('#rate-now').textContent = Math.round(whole.reduce((a, b) => a + b, 0) / whole.length);
    drawSparkline();
  }

  function drawSparkline() {
    const canvas = $('#rate');
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 120;
    const h = canvas.clientHeight || 28;
    if (canvas.width !== Math.round(w * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const data = st.buckets.slice(0, -1);
    const max = Math.max(1, ...data);
    ctx.beginPath();
    data.forEach((v, i) => {
      const x = (i / (data.length - 1)) * (w - 2) + 1;
      const y = h - 2 - (v / max) * (h - 4);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.strokeStyle = '#58a6ff';
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }

  setInterval(() => {
    renderMeters();
    if (st.conn === 'reconnecting') renderConn();
  }, 500);

  // ---- forms ---------------------------------------------------------------------

  const parseSymbols = (text) =>
    text.split(/[\s,;]+/).map((s) => s.trim().toUpperCase()).filter(Boolean);

  function readFilters(form) {
    const f = {};
    const symbols = parseSymbols(form.elements.symbols.value);
    if (symbols.length) f.symbols = symbols;
    const scans = [...form.querySelectorAll('input[name=scans]:checked')].map((i) => i.value);
    if (scans.length) f.scans = scans;
    for (const name of ['min_score', 'min_price', 'max_price']) {
      const v = form.elements[name].value.trim();
      if (v !== '') f[name] = Number(v);
    }
    return f;
  }

  // A new filter replaces the subscription with a snapshot: results from before the
  // change were filtered differently, so resuming would leave the table inexact.
  function applyFilters(filters) {
    st.desired = filters;
    $('#filter-error').textContent = '';
    subscribe();
  }

  function writeFilters(form, f) {
    form.elements.symbols.value = (f.symbols || []).join(' ');
    for (const box of form.querySelectorAll('input[name=scans]')) {
      box.checked = (f.scans || []).includes(box.value);
    }
    for (const name of ['min_score', 'min_price', 'max_price']) {
      form.elements[name].value = f[name] ?? '';
    }
  }

  // The scan boxes come from GET /scans, so scans from the config file are there too;
  // the page's own eight stay when the list cannot be had (or the source has none).
  async function loadScans() {
    let list;
    try {
      list = (await getJson('/scans')).scans;
    } catch (e) {
      return;
    }
    if (!Array.isArray(list) || list.length === 0) return;
    const box = $('#filters fieldset.scans');
    const named = new Map([...box.querySelectorAll('label')].map((l) => [l.querySelector('input').value, l.textContent.trim()]));
    for (const l of box.querySelectorAll('label')) l.remove();
    for (const scan of list) {
      const label = document.createElement('label');
      const input = document.createElement('input');
      input.type = 'checkbox';
      input.name = 'scans';
      input.value = scan.name;
      label.append(input, ` ${named.get(scan.name) || scan.name.replace(/_/g, ' ')}`);
      label.title = `${(scan.when || []).join(' and ')}\nscore ${scan.score}`;
      if (!scan.builtin) label.classList.add('custom');
      box.appendChild(label);
    }
    writeFilters($('#filters'), st.desired || {});
  }

  $('#filters').addEventListener('submit', (e) => {
    e.preventDefault();
    applyFilters(readFilters(e.target));
  });

  $('#filter-reset').addEventListener('click', () => {
    $('#filters').reset();
    applyFilters({});
  });

  $('#adhoc').addEventListener('submit', (e) => {
    e.preventDefault();
    const symbols = parseSymbols(e.target.elements.symbols.value);
    if (!symbols.length) return;
    const purpose = { kind: 'adhoc', symbols };
    const id = send('scan', { symbols }, purpose);
    if (id) {
      purpose.id = id;
      $('#adhoc-reply').textContent = 'sent…';
    } else {
      $('#adhoc-reply').textContent = 'not connected';
    }
  });

  $('#start').addEventListener('click', () => control('/stream/start'));
  $('#stop').addEventListener('click', () => control('/stream/stop'));

  $('#alerts').addEventListener('click', (e) => {
    const b = e.target.closest('button.ack');
    if (!b) return;
    b.disabled = true;
    ack(b.dataset.alertId);
  });

  $('#opps thead').addEventListener('click', (e) => {
    const th = e.target.closest('th[data-sort]');
    if (!th) return;
    const field = th.dataset.sort;
    st.sort = { field, dir: st.sort.field === field ? -st.sort.dir : -1 };
    for (const h of document.querySelectorAll('#opps th[data-sort]')) h.removeAttribute('aria-sort');
    th.setAttribute('aria-sort', st.sort.dir < 0 ? 'descending' : 'ascending');
    st.orderDirty = true;
    schedule();
  });

  // Read-only view for tests and the curious.
  window.scanstream = Object.freeze({
    stats: () => ({
      state: st.conn,
      epoch: st.epoch,
      lastSeq: st.lastSeq,
      received: st.received,
      duplicates: st.duplicates,
      gaps: st.gaps,
      reconnects: st.reconnects,
      rows: st.rows.size,
      seqs: st.seqs.slice(-SEQS_KEPT),
    }),
  });

  connect();
  loadScans();
})();
