// Ledger and audit: ledger entries searchable by payer, provider, endpoint, state and time,
// paginated, each with its event history and its transaction (linked to a block explorer
// whose base URL is set per chain in this browser); the audit trail with its filters, pages
// and the chain's verification status.

import { ApiError, get, path } from '../api.js';
import { amount, badge, clear, errorNotice, h, inputUnixS, notice, short, table, time } from '../dom.js';

const PAGE = 50;
const SCAN = 500;
const SCAN_PAGES_MAX = 20;
let tab = 'entries';

// Block explorer base URL per chain id, kept in this browser (not a secret).
export function explorer(chainId) {
  return localStorage.getItem('tollgate.console.explorer.' + chainId) || '';
}

function txLink(chainId, tx) {
  if (!tx) return '—';
  const base = explorer(chainId);
  if (!base) return h('code', { title: tx, text: short(tx) });
  return h('a', { href: base.replace(/\/+$/, '') + '/tx/' + tx, rel: 'noreferrer noopener', target: '_blank', title: tx, text: short(tx) });
}

function field(form, name) {
  return form.elements.namedItem(name).value.trim();
}

export async function render(root, ctx) {
  clear(root);
  const body = h('div');
  const tabs = h('div', { class: 'tabs' },
    [['entries', 'Ledger entries'], ['audit', 'Audit trail'], ['explorer', 'Transaction links']].map(([id, title]) => h('button', {
      type: 'button', class: tab === id ? 'active' : null, 'data-tab': id, text: title,
      onclick: () => { tab = id; render(root, ctx); },
    })));
  root.append(tabs, body);
  if (tab === 'entries') return entries(body, ctx);
  if (tab === 'audit') return audit(body, ctx);
  return explorerSettings(body);
}

function entries(root, ctx) {
  const provider = ctx.whoami.role === 'provider' ? null : h('label', {}, 'Provider', h('input', { name: 'provider', placeholder: 'any' }));
  const form = h('form', { class: 'filters', 'data-form': 'entries' },
    h('label', {}, 'Payer wallet', h('input', { name: 'payer', placeholder: '0x…', size: 44 })),
    provider,
    h('label', {}, 'Endpoint contains', h('input', { name: 'route', placeholder: 'provider:/path' })),
    h('label', {}, 'State', h('select', { name: 'state' }, ['', 'reserved', 'forwarded', 'settling', 'settled', 'voided', 'settle_failed', 'refund_owed'].map((s) => h('option', { value: s, text: s || 'any' })))),
    h('label', {}, 'From (UTC)', h('input', { name: 'from', type: 'datetime-local' })),
    h('label', {}, 'To (UTC)', h('input', { name: 'to', type: 'datetime-local' })),
    h('button', { type: 'submit', class: 'primary', text: 'Search' }));
  const results = h('div');
  const detail = h('div');
  root.append(form, results, detail);
  const offsets = [0];
  const load = async () => {
    clear(results).appendChild(notice('loading', 'Loading entries…'));
    const query = {
      payer: field(form, 'payer') || undefined,
      provider: provider ? field(form, 'provider') || undefined : undefined,
      from_unix_s: inputUnixS(field(form, 'from')),
      to_unix_s: inputUnixS(field(form, 'to')),
    };
    const state = field(form, 'state');
    const route = field(form, 'route');
    const keep = (e) => (!state || e.state === state) && (!route || e.route.includes(route));
    // The API filters by payer, provider and time; state and endpoint are matched here,
    // reading pages until one page of matches is found (bounded).
    const found = [];
    let offset = offsets[offsets.length - 1];
    let more = false;
    for (let i = 0; i < SCAN_PAGES_MAX && found.length < PAGE; i++) {
      const page = (await get('/admin/ledger/entries', { ...query, offset, limit: SCAN })).entries;
      for (const [j, e] of page.entries()) {
        if (found.length === PAGE) { offset += j; more = true; break; }
        if (keep(e)) found.push(e);
      }
      if (found.length === PAGE && more) break;
      offset += page.length;
      if (page.length < SCAN) { more = false; break; }
      more = true;
    }
    if (ctx.stale()) return;
    clear(results);
    results.appendChild(table([
      { title: 'Reserved', cell: (e) => time(e.created_unix_s) },
      { title: 'Entry', cell: (e) => h('code', { title: e.id, text: short(e.id) }) },
      { title: 'Endpoint', cell: (e) => h('code', { text: e.route }) },
      { title: 'Payer', cell: (e) => h('code', { title: e.payer, text: short(e.payer) }) },
      { title: 'Amount', num: true, cell: (e) => amount(e.amount_atomic, 6, e.symbol) },
      { title: 'State', cell: (e) => badge(e.state) },
      { title: 'Transaction', cell: (e) => txLink(e.chain_id, e.tx_hash) },
    ], found, { onRow: (e) => showEntry(detail, e), empty: 'No entry matches. Widen the time range or clear a filter.' }));
    results.appendChild(h('div', { class: 'pager' },
      h('button', { type: 'button', text: '← Previous', disabled: offsets.length === 1, onclick: () => { offsets.pop(); load().catch(fail); } }),
      h('span', { class: 'muted', text: `page ${offsets.length}` }),
      h('button', { type: 'button', text: 'Next →', disabled: !more, onclick: () => { offsets.push(offset); load().catch(fail); } })));
  };
  const fail = (e) => clear(results).appendChild(errorNotice(e));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); offsets.length = 1; clear(detail); load().catch(fail); });
  return load();
}

async function showEntry(root, e) {
  clear(root).appendChild(notice('loading', 'Loading the entry\'s history…'));
  let events;
  try {
    events = (await get(path('ledger', 'entries', e.id, 'events'))).events;
  } catch (err) {
    clear(root).appendChild(errorNotice(err));
    return;
  }
  clear(root);
  const rows = Object.entries(e).filter(([k]) => k !== 'id');
  root.appendChild(h('div', { class: 'detail', 'data-entry': e.id },
    h('h2', {}, 'Entry ', h('code', { text: e.id })),
    h('dl', {}, rows.map(([k, v]) => [
      h('dt', { text: k }),
      h('dd', {}, k.endsWith('_unix_s') ? time(v) : k === 'amount_atomic' ? amount(v, 6, e.symbol) + ' (' + v + ' atomic)' : k === 'tx_hash' ? txLink(e.chain_id, v) : v === null ? '—' : String(v)),
    ])),
    h('h3', { text: 'Event history' }),
    table([
      { title: 'At', cell: (v) => time(v.at_unix_s) },
      { title: 'From', cell: (v) => (v.from_state ? badge(v.from_state) : '—') },
      { title: 'To', cell: (v) => badge(v.to_state) },
      { title: 'Cause', cell: (v) => h('code', { text: v.cause }) },
      { title: 'Transaction', cell: (v) => txLink(e.chain_id, v.tx_hash) },
      { title: 'Detail', cell: (v) => (v.detail ? h('code', { text: v.detail }) : '—') },
    ], events, { empty: 'No event recorded.' })));
}

async function audit(root, ctx) {
  const reader = ctx.whoami.role !== 'provider';
  const verify = h('div');
  const form = h('form', { class: 'filters', 'data-form': 'audit' },
    h('label', {}, 'Wallet', h('input', { name: 'wallet', placeholder: '0x…', size: 44 })),
    h('label', {}, 'Endpoint', h('input', { name: 'endpoint', placeholder: 'provider:/path' })),
    h('label', {}, 'Decision', h('select', { name: 'decision' }, ['', 'accepted', 'denied'].map((s) => h('option', { value: s, text: s || 'any' })))),
    h('label', {}, 'From (UTC)', h('input', { name: 'from', type: 'datetime-local' })),
    h('label', {}, 'To (UTC)', h('input', { name: 'to', type: 'datetime-local' })),
    h('button', { type: 'submit', class: 'primary', text: 'Search' }));
  const results = h('div');
  root.append(verify, form, results);
  if (reader) {
    get('/admin/audit/verify').then((v) => {
      clear(verify).appendChild(v.intact
        ? h('div', { class: 'notice ok', 'data-audit': 'intact', text: `Audit chain intact: ${v.records} records verified.` })
        : notice('error', `Audit chain BROKEN at seq ${v.broken_at_seq}: ${v.problem}. Stop and investigate (docs/admin-api.md, Audit trail).`));
    }).catch((e) => clear(verify).appendChild(errorNotice(e)));
  }
  const cursors = [undefined];
  const ms = (v) => { const s = inputUnixS(v); return s === undefined ? undefined : s * 1000; };
  const load = async () => {
    clear(results).appendChild(notice('loading', 'Loading audit records…'));
    const page = await get('/admin/audit', {
      wallet: field(form, 'wallet') || undefined,
      endpoint: field(form, 'endpoint') || undefined,
      decision: field(form, 'decision') || undefined,
      from_unix_ms: ms(field(form, 'from')),
      to_unix_ms: ms(field(form, 'to')),
      after_seq: cursors[cursors.length - 1],
      limit: PAGE,
    });
    if (ctx.stale()) return;
    clear(results);
    results.appendChild(table([
      { title: 'Seq', num: true, cell: (r) => String(r.seq) },
      { title: 'At', cell: (r) => time(Math.floor(r.at_unix_ms / 1000)) },
      { title: 'Endpoint', cell: (r) => h('code', { text: r.endpoint || '—' }) },
      { title: 'Wallet', cell: (r) => h('code', { title: r.wallet, text: short(r.wallet) }) },
      { title: 'Decision', cell: (r) => badge(r.decision) },
      { title: 'Reason', cell: (r) => h('code', { text: r.reason }) },
      { title: 'Upstream', num: true, cell: (r) => (r.upstream_status === null ? '—' : String(r.upstream_status)) },
      { title: 'Latency', num: true, cell: (r) => (r.latency_ms === null ? '—' : r.latency_ms + ' ms') },
      { title: 'Credential', cell: (r) => (r.credential ? `${r.credential} v${r.credential_version}` : '—') },
    ], page.records, { empty: 'No audit record matches. Records appear for every paid-call attempt.' }));
    results.appendChild(h('div', { class: 'pager' },
      h('button', { type: 'button', text: '← Previous', disabled: cursors.length === 1, onclick: () => { cursors.pop(); load().catch(fail); } }),
      h('span', { class: 'muted', text: `page ${cursors.length}` }),
      h('button', { type: 'button', text: 'Next →', disabled: page.next_after_seq === null, onclick: () => { cursors.push(page.next_after_seq); load().catch(fail); } })));
  };
  const fail = (e) => clear(results).appendChild(e instanceof ApiError ? errorNotice(e) : notice('error', e.message));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); cursors.length = 1; load().catch(fail); });
  return load();
}

function explorerSettings(root) {
  const form = h('form', { class: 'filters' },
    h('label', {}, 'Chain id', h('input', { name: 'chain', placeholder: '8453', size: 10 })),
    h('label', {}, 'Explorer base URL', h('input', { name: 'base', placeholder: 'an explorer whose /tx/HASH shows a transaction', size: 50 })),
    h('button', { type: 'submit', class: 'primary', text: 'Save' }));
  const saved = h('p', { class: 'muted' });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const chain = field(form, 'chain');
    const base = field(form, 'base');
    if (!/^[0-9]+$/.test(chain) || (base && !/^https?:\/\/[^\s]+$/.test(base))) {
      saved.textContent = 'A chain id is digits; the base URL starts with http:// or https://.';
      return;
    }
    if (base) localStorage.setItem('tollgate.console.explorer.' + chain, base);
    else localStorage.removeItem('tollgate.console.explorer.' + chain);
    saved.textContent = base ? `Transactions on chain ${chain} link to ${base}/tx/….` : `Chain ${chain}: no link.`;
  });
  root.append(h('p', { text: 'Transaction hashes link to a block explorer when one is set for their chain (kept in this browser only).' }), form, saved);
}
