// Wallets: the policies of every scope this token manages, each wallet's spend today and
// this month (UTC) against its caps, revoke and reinstate with an in-page confirmation, and
// revoking a wallet that has no policy yet.

import { get, path, post } from '../api.js';
import { amount, badge, clear, errorNotice, h, notice, table, time } from '../dom.js';
import { confirmThen } from './endpoints.js';
import { entriesSince } from './overview.js';

// What the caps count (docs/admin-api.md, Wallet policies).
const CHARGEABLE = ['reserved', 'forwarded', 'settling', 'settled', 'refund_owed'];

function monthStart() {
  const d = new Date();
  return Math.floor(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) / 1000);
}

function dayStart() {
  const d = new Date();
  return Math.floor(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()) / 1000);
}

async function spend(policy) {
  const query = { payer: policy.wallet };
  if (policy.scope !== '*') query.provider = policy.scope;
  const { entries, cut } = await entriesSince(monthStart(), query);
  const day = dayStart();
  let today = 0n, month = 0n;
  for (const e of entries) {
    if (!CHARGEABLE.includes(e.state)) continue;
    month += BigInt(e.amount_atomic);
    if (e.created_unix_s >= day) today += BigInt(e.amount_atomic);
  }
  return { today, month, cut };
}

function against(used, cap) {
  const text = amount(used.toString()) + (cap === null || cap === undefined ? '' : ' of ' + amount(String(cap)));
  const over = cap !== null && cap !== undefined && used >= BigInt(cap);
  return h('span', { class: over ? 'error' : null, text });
}

export async function render(root, ctx) {
  const status = h('div');
  const scope = ctx.whoami.role === 'provider' ? ctx.whoami.provider : undefined;
  const policies = (await get('/admin/wallets', { scope })).policies;
  const spent = await Promise.all(policies.map(spend));
  if (ctx.stale()) return;
  clear(root);
  const redraw = () => render(root, ctx).catch((e) => clear(root).appendChild(errorNotice(e)));
  const rows = policies.map((p, i) => ({ ...p, spent: spent[i] }));
  const wallet = h('input', { name: 'wallet', placeholder: '0x… wallet to revoke', size: 44 });
  const scopeInput = h('input', { name: 'scope', value: scope || '*', size: 10, readonly: ctx.whoami.role === 'provider' });
  const form = h('form', { class: 'filters', 'data-form': 'revoke-wallet' }, h('label', {}, 'Wallet', wallet), h('label', {}, 'Scope', scopeInput), h('button', { type: 'button', class: 'danger', text: 'Revoke wallet' }));
  form.lastChild.addEventListener('click', confirmThen('Revoke wallet', () => post(path('wallets', wallet.value.trim(), 'revoke'), undefined, { scope: scopeInput.value.trim() }), status, redraw));
  form.addEventListener('submit', (ev) => ev.preventDefault());
  root.append(
    h('p', { class: 'muted', text: 'Spend counts reserved, forwarded, settling, settled and refund-owed entries, per UTC day and calendar month, as the caps do.' }),
    status,
    table([
      { title: 'Scope', cell: (p) => h('code', { text: p.scope }) },
      { title: 'Wallet', cell: (p) => h('code', { text: p.wallet }) },
      { title: 'State', cell: (p) => badge(p.revoked ? 'revoked' : 'active') },
      { title: 'Registered', cell: (p) => (p.registered ? 'yes' : 'no') },
      { title: 'Endpoints', cell: (p) => (p.endpoints ? p.endpoints.map((e) => h('div', {}, h('code', { class: 'wallet-endpoint', text: e }))) : 'all') },
      { title: 'Per call max', num: true, cell: (p) => (p.per_call_max === null ? '—' : amount(String(p.per_call_max))) },
      { title: 'Today / daily cap', num: true, cell: (p) => against(p.spent.today, p.daily_cap) },
      { title: 'Month / monthly cap', num: true, cell: (p) => against(p.spent.month, p.monthly_cap) },
      { title: 'Updated', cell: (p) => time(p.updated_unix_s) },
      { title: '', cell: (p) => (p.revoked
        ? h('button', { type: 'button', 'data-wallet-action': 'reinstate', text: 'Reinstate', onclick: confirmThen('Reinstate', () => post(path('wallets', p.wallet, 'reinstate'), undefined, { scope: p.scope }), status, redraw) })
        : h('button', { type: 'button', class: 'danger', 'data-wallet-action': 'revoke', text: 'Revoke', onclick: confirmThen('Revoke', () => post(path('wallets', p.wallet, 'revoke'), undefined, { scope: p.scope }), status, redraw) })) },
    ], rows, { empty: 'No wallet policy. Every wallet may pay until one is revoked or capped (`tollgate admin wallet set`).' }),
    h('h2', { text: 'Revoke a wallet' }),
    form,
  );
  if (rows.some((r) => r.spent.cut)) root.appendChild(notice('error', 'A wallet has more entries this month than the console reads; its spend shown is a lower bound.'));
}
