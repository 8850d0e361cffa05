// Endpoints: each provider's route table (description, methods, settlement, price and price
// version, enabled), enable/disable, price change (a new price version), the price history,
// and the vault credentials' versions (never values) with rotation. Every change is the same
// admin API call the CLI makes, under the same permission checks.

import { get, path, post, put } from '../api.js';
import { amount, badge, clear, errorNotice, h, notice, table, time } from '../dom.js';

export async function render(root, ctx) {
  const providers = (await get('/admin/providers')).providers;
  if (ctx.stale()) return;
  clear(root);
  if (providers.length === 0) {
    root.appendChild(notice('empty', 'No provider yet. Add one with `tollgate admin provider put` or in the configuration file.'));
    return;
  }
  for (const p of providers) {
    const section = h('section', { 'data-provider': p.id });
    root.appendChild(section);
    await provider(section, p, ctx);
  }
}

async function provider(root, p, ctx) {
  const [endpoints, credentials] = await Promise.all([
    get(path('providers', p.id, 'endpoints')),
    get(path('providers', p.id, 'credentials')),
  ]);
  if (ctx.stale()) return;
  // Reads the provider again; `message` (a notice) is shown above the new table.
  const redraw = (message) =>
    provider(clear(root), p, ctx)
      .then(() => message && root.insertBefore(message, root.firstChild ? root.firstChild.nextSibling : null))
      .catch((e) => root.appendChild(errorNotice(e)));
  const status = h('div');
  const history = h('div');
  root.append(
    h('h2', {}, 'Provider ', h('code', { text: p.id }), ' ', h('span', { class: 'muted', text: `(${p.source}) pays to ${p.spec && p.spec.pay_to ? p.spec.pay_to : '—'}` })),
    service(p.spec),
    status,
    table([
      { title: 'Path', cell: (e) => h('code', { text: e.path }) },
      { title: 'Description', cell: (e) => h('span', { class: 'description', text: e.spec && e.spec.description ? e.spec.description : '' }) },
      { title: 'Methods', cell: (e) => (e.spec && e.spec.methods ? e.spec.methods.join(', ') : 'GET') },
      { title: 'Settlement', cell: (e) => (e.spec && e.spec.settlement) || 'default' },
      { title: 'Price', num: true, cell: (e) => e.prices.map((x) => h('div', { title: x.network, text: amount(x.amount) })) },
      { title: 'Version', num: true, cell: (e) => String(e.price_version) },
      { title: 'State', cell: (e) => badge(e.enabled ? 'enabled' : 'disabled') },
      { title: 'Actions', cell: (e) => actions(e, p, status, history, redraw) },
    ], endpoints.endpoints, { empty: 'No endpoint. Add one with `tollgate admin endpoint put`.' }),
    history,
    h('h3', { text: 'Vault credentials (versions only; secrets are write-only)' }),
    table([
      { title: 'Name', cell: (c) => h('code', { text: c.name }) },
      { title: 'Version', num: true, cell: (c) => String(c.version) },
      { title: 'Created', cell: (c) => time(c.created_unix_s) },
      { title: 'State', cell: (c) => (c.revoked_unix_s ? h('span', {}, badge('revoked'), ' ', time(c.revoked_unix_s)) : badge('active')) },
      { title: '', cell: (c) => (c.revoked_unix_s ? '' : h('button', { type: 'button', class: 'danger', text: 'Revoke', onclick: confirmThen('Revoke this version', () => post(path('providers', p.id, 'credentials', c.name, c.version, 'revoke')), status, redraw) })) },
    ], credentials.credentials, { empty: 'No vault credential.' }),
    rotateForm(p, status, redraw),
  );
}

// What agents see of the provider in 402s and discovery (service name, tags, icon URL), as
// text: these are set through the admin API by whoever manages the provider, so they are
// untrusted like a description. The icon is shown as its URL, never loaded (the page's policy
// allows no image from another origin either).
// Without any of them it is an empty string: `append` would write a null as the text "null".
function service(spec) {
  if (!spec || (!spec.service_name && !(spec.tags && spec.tags.length) && !spec.icon_url)) return '';
  return h('p', { class: 'muted', 'data-service': '' },
    'Service ', h('span', { class: 'service-name', text: spec.service_name || '—' }),
    (spec.tags || []).map((t) => [' ', h('span', { class: 'badge tag', text: t })]),
    spec.icon_url ? [' icon ', h('code', { class: 'icon-url', text: spec.icon_url })] : null);
}

// A button that asks once more in the page (no browser dialog) before it acts.
export function confirmThen(label, act, status, done) {
  return (ev) => {
    const button = ev.currentTarget;
    const holder = button.parentNode;
    const yes = h('button', { type: 'button', class: 'danger', 'data-confirm': 'yes', text: 'Confirm: ' + label.toLowerCase() });
    const no = h('button', { type: 'button', text: 'Cancel' });
    const box = h('span', { class: 'inline' }, yes, no);
    holder.replaceChild(box, button);
    no.addEventListener('click', () => holder.replaceChild(button, box));
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      try {
        await act();
        done();
      } catch (e) {
        clear(status).appendChild(errorNotice(e));
        holder.replaceChild(button, box);
      }
    });
  };
}

function actions(e, p, status, history, redraw) {
  const toggle = e.enabled
    ? h('button', { type: 'button', class: 'danger', text: 'Disable', onclick: confirmThen('Disable', () => post(path('providers', p.id, 'endpoints', 'disable'), { path: e.path }), status, redraw) })
    : h('button', { type: 'button', text: 'Enable', onclick: async () => {
      try { await post(path('providers', p.id, 'endpoints', 'enable'), { path: e.path }); redraw(null); } catch (err) { clear(status).appendChild(errorNotice(err)); }
    } });
  const price = h('input', { name: 'price', size: 10, placeholder: 'e.g. 0.002', 'aria-label': 'new price in token units' });
  const form = h('form', { class: 'inline', 'data-price-form': e.path }, price, h('button', { type: 'submit', text: 'Set price' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const value = price.value.trim();
    if (!/^[0-9]+(\.[0-9]+)?$/.test(value)) {
      clear(status).appendChild(notice('error', 'A price is a decimal number of token units, like 0.002.'));
      return;
    }
    // The whole endpoint is PUT again with only the price changed: the API keeps a new
    // price version when the price differs.
    const spec = { ...(e.spec || { path: e.path }) };
    delete spec.price_atomic;
    spec.price = value;
    try {
      const r = await put(path('providers', p.id, 'endpoints'), spec);
      redraw(h('div', { class: 'notice ok', 'data-price-set': r.price_version, text: `${r.name}: price version ${r.price_version}${r.new_price_version ? ' (new)' : ' (unchanged)'}.` }));
    } catch (err) {
      clear(status).appendChild(errorNotice(err));
    }
  });
  const showHistory = h('button', { type: 'button', text: 'Price history', onclick: async () => {
    try {
      const v = await get(path('providers', p.id, 'endpoints', 'prices'), { path: e.path });
      clear(history).append(h('h3', {}, 'Price versions of ', h('code', { text: v.name })), table([
        { title: 'Version', num: true, cell: (x) => String(x.price_version) + (x.price_version === v.current ? ' (current)' : '') },
        { title: 'Since', cell: (x) => time(x.created_unix_s) },
        { title: 'Prices', cell: (x) => x.prices.map((y) => h('div', { text: `${amount(y.amount)} on ${y.network}` })) },
      ], v.versions));
    } catch (err) {
      clear(status).appendChild(errorNotice(err));
    }
  } });
  return h('div', { class: 'inline' }, toggle, form, showHistory);
}

function rotateForm(p, status, redraw) {
  const name = h('input', { name: 'name', placeholder: 'credential name', size: 16 });
  const secret = h('input', { name: 'secret', type: 'password', placeholder: 'new secret', autocomplete: 'off', size: 24 });
  const form = h('form', { class: 'filters' }, h('label', {}, 'Rotate: name', name), h('label', {}, 'New secret (write-only)', secret), h('button', { type: 'submit', text: 'Upload new version' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const value = secret.value;
    secret.value = '';
    try {
      const r = await post(path('providers', p.id, 'credentials', name.value.trim()), { secret: value });
      redraw(h('div', { class: 'notice ok', text: `${r.name}: version ${r.version} serves from the next request. Revoke the old version when agents are unaffected.` }));
    } catch (err) {
      clear(status).appendChild(errorNotice(err));
    }
  });
  return form;
}
