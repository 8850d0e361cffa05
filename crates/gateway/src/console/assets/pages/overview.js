// Overview: paid calls, revenue and failures over a selectable range (per hour or per day),
// by provider and endpoint; settlement states now with their counts and oldest age; the
// relayer, deferred backlog and settlement lag from the admin metrics (operator, finance).
// Everything is computed here from the admin API's ledger pages and audit records: the
// console keeps no numbers of its own.

import { ApiError, call, get } from '../api.js';
import { age, amount, badge, clear, errorNotice, h, notice, now, table } from '../dom.js';
import { bars } from '../chart.js';

const RANGES = [
  { id: '24h', title: 'Last 24 hours (per hour)', seconds: 86400, bucket: 3600 },
  { id: '7d', title: 'Last 7 days (per day)', seconds: 7 * 86400, bucket: 86400 },
  { id: '30d', title: 'Last 30 days (per day)', seconds: 30 * 86400, bucket: 86400 },
];
const STATES = ['reserved', 'forwarded', 'settling', 'settled', 'voided', 'settle_failed', 'refund_owed'];
const FAILED = ['voided', 'settle_failed', 'refund_owed'];
const PAGE = 1000;
const PAGES_MAX = 20;

let chosen = '24h';

// Every entry reserved since `from`, page by page (at most PAGES_MAX pages, said when cut).
export async function entriesSince(from, query = {}) {
  const all = [];
  for (let i = 0; i < PAGES_MAX; i++) {
    const page = (await get('/admin/ledger/entries', { ...query, from_unix_s: from, offset: i * PAGE, limit: PAGE })).entries;
    all.push(...page);
    if (page.length < PAGE) return { entries: all, cut: false };
  }
  return { entries: all, cut: true };
}

async function deniedSince(fromS) {
  const all = [];
  let after;
  for (let i = 0; i < PAGES_MAX; i++) {
    const page = await get('/admin/audit', { decision: 'denied', from_unix_ms: fromS * 1000, after_seq: after, limit: PAGE });
    all.push(...page.records);
    if (page.next_after_seq === null || page.next_after_seq === undefined) break;
    after = page.next_after_seq;
  }
  return all;
}

function series(items, from, range, at, value) {
  const n = Math.ceil(range.seconds / range.bucket);
  const start = Math.floor(from / range.bucket) * range.bucket;
  const points = [];
  for (let i = 0; i <= n; i++) points.push({ at: start + i * range.bucket, value: 0 });
  for (const it of items) {
    const i = Math.floor((at(it) - start) / range.bucket);
    if (i >= 0 && i < points.length) points[i].value += value(it);
  }
  return points;
}

const atomic = (e) => Number(e.amount_atomic);

function kpi(id, label, value) {
  return h('div', { class: 'kpi', 'data-kpi': id }, h('div', { class: 'label', text: label }), h('div', { class: 'value', text: value }));
}

// The relayer, backlog and lag lines of the Prometheus text (operator and finance only).
async function health() {
  let text;
  try {
    text = await call('GET', '/metrics', { text: true });
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) return null;
    throw e;
  }
  const wanted = /^tollgate_(relayer_balance_wei|relayer_pending_transactions|deferred_backlog|settlement_lag_seconds)/;
  return text.split('\n').filter((l) => wanted.test(l)).map((l) => {
    const cut = l.lastIndexOf(' ');
    return { metric: l.slice(0, cut), value: l.slice(cut + 1) };
  });
}

export async function render(root, ctx) {
  const range = RANGES.find((r) => r.id === chosen);
  const t = now();
  const from = t - range.seconds;
  // Provider tokens may not read the metrics (they name every provider's routes): not asked.
  const metricsOf = ctx.whoami.role === 'provider' ? Promise.resolve(null) : health();
  const [{ entries, cut }, denied, metrics] = await Promise.all([entriesSince(from), deniedSince(from), metricsOf]);
  if (ctx.stale()) return;
  clear(root);
  root.appendChild(
    h('div', { class: 'tabs' }, RANGES.map((r) => h('button', {
      type: 'button', class: r.id === chosen ? 'active' : null, 'data-range': r.id, text: r.title,
      onclick: () => { chosen = r.id; render(root, ctx).catch((e) => clear(root).appendChild(errorNotice(e))); },
    }))),
  );
  if (cut) root.appendChild(notice('error', `More than ${PAGE * PAGES_MAX} entries in this range: the figures cover the oldest ${entries.length}. Choose a shorter range.`));

  const settled = entries.filter((e) => e.state === 'settled');
  const failed = entries.filter((e) => FAILED.includes(e.state));
  const revenue = settled.reduce((s, e) => s + BigInt(e.amount_atomic), 0n);
  root.appendChild(h('div', { class: 'kpis' },
    kpi('paid_calls', 'Paid calls (entries)', String(entries.length)),
    kpi('settled', 'Settled', String(settled.length)),
    kpi('revenue', 'Revenue (settled)', amount(revenue.toString())),
    kpi('failed', 'Voided or failed', String(failed.length)),
    kpi('denied', 'Denied attempts (audit)', String(denied.length)),
  ));
  if (entries.length === 0 && denied.length === 0) {
    root.appendChild(notice('empty', 'No paid call in this range. Calls appear here once agents pay an endpoint; see Endpoints for the route table.'));
  }
  const fmtAmount = (v) => amount(String(Math.round(v)));
  root.appendChild(h('div', { class: 'charts' },
    bars('Paid calls', series(entries, from, range, (e) => e.created_unix_s, () => 1)),
    bars('Revenue (settled)', series(settled, from, range, (e) => e.created_unix_s, atomic), { format: fmtAmount }),
    bars('Failures (voided, failed, refund owed, denied)', [
      series(failed, from, range, (e) => e.created_unix_s, () => 1),
      series(denied, from, range, (r) => Math.floor(r.at_unix_ms / 1000), () => 1),
    ].reduce((a, b) => a.map((p, i) => ({ at: p.at, value: p.value + b[i].value }))), { bad: true }),
  ));

  root.appendChild(h('h2', { text: 'Settlement states now (entries of this range)' }));
  const byState = STATES.map((s) => {
    const of = entries.filter((e) => e.state === s);
    const oldest = of.reduce((m, e) => Math.min(m, e.created_unix_s), Infinity);
    return { state: s, count: of.length, oldest: of.length ? t - oldest : null };
  });
  root.appendChild(table([
    { title: 'State', cell: (r) => badge(r.state) },
    { title: 'Count', num: true, cell: (r) => h('span', { 'data-state-count': r.state, text: String(r.count) }) },
    { title: 'Oldest', num: true, cell: (r) => (r.oldest === null ? '—' : age(r.oldest)) },
  ], byState));

  root.appendChild(h('h2', { text: 'By provider and endpoint' }));
  const routes = new Map();
  for (const e of entries) {
    const r = routes.get(e.route) || { provider: e.provider, route: e.route, calls: 0, revenue: 0n, failed: 0 };
    r.calls += 1;
    if (e.state === 'settled') r.revenue += BigInt(e.amount_atomic);
    if (FAILED.includes(e.state)) r.failed += 1;
    routes.set(e.route, r);
  }
  root.appendChild(table([
    { title: 'Provider', cell: (r) => r.provider },
    { title: 'Endpoint', cell: (r) => h('code', { text: r.route }) },
    { title: 'Calls', num: true, cell: (r) => String(r.calls) },
    { title: 'Revenue', num: true, cell: (r) => amount(r.revenue.toString()) },
    { title: 'Failed', num: true, cell: (r) => String(r.failed) },
  ], [...routes.values()].sort((a, b) => b.calls - a.calls), { empty: 'No calls in this range.' }));

  root.appendChild(h('h2', { text: 'Relayer, deferred backlog and settlement lag' }));
  if (metrics === null) {
    root.appendChild(notice('empty', 'Only operator and finance tokens read the relayer and settlement metrics.'));
  } else {
    root.appendChild(table([
      { title: 'Metric', cell: (r) => h('code', { text: r.metric }) },
      { title: 'Value', num: true, cell: (r) => r.value },
    ], metrics, { empty: 'The gateway reported no relayer or settlement metric yet.' }));
  }
}
