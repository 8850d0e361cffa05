// Building the page without HTML strings: every text (provider descriptions, wallet names,
// notes, error messages) becomes a text node, so nothing a provider or agent wrote can run.

// h('tag', {class, text, title, onclick: fn, ...attributes}, ...children)
export function h(tag, attrs = {}, ...children) {
  const svg = ['svg', 'rect', 'text', 'line', 'g', 'title'].includes(tag) && attrs.svg !== false;
  const node = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false || k === 'svg') continue;
    if (k === 'text') node.textContent = String(v);
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k.startsWith('on') || k === 'style' || k === 'srcdoc') throw new Error('refused attribute ' + k);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else if (c instanceof Node) node.appendChild(c);
    else node.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function notice(kind, text) {
  return h('div', { class: 'notice ' + kind, role: kind === 'error' ? 'alert' : 'status', text });
}

// An error of the admin API as a notice that says what to do.
export function errorNotice(e) {
  const what = {
    admin_forbidden: 'This token\'s role may not see this. Log in with an operator token, or ask an operator.',
    admin_unauthorized: 'The token is unknown or revoked. Log in again.',
    ledger_unavailable: 'The ledger database is unavailable. Retry in a moment; check the gateway\'s log.',
    unreachable: 'Check that the gateway is running and reload.',
  }[e.code];
  return notice('error', (e.code ? e.code + ': ' : '') + e.message + (what ? ' — ' + what : ''));
}

// Atomic units to token units ("1500" with 6 decimals → "0.0015 USDC"), exactly, with BigInt.
export function amount(atomic, decimals = 6, symbol = 'USDC') {
  if (atomic === null || atomic === undefined || atomic === '') return '—';
  let v;
  try {
    v = BigInt(atomic);
  } catch (e) {
    return String(atomic);
  }
  const neg = v < 0n;
  if (neg) v = -v;
  const scale = 10n ** BigInt(decimals);
  const whole = v / scale;
  let frac = (v % scale).toString().padStart(decimals, '0').replace(/0+$/, '');
  if (frac.length < 2) frac = frac.padEnd(2, '0');
  return (neg ? '-' : '') + whole.toString() + '.' + frac + ' ' + symbol;
}

const pad = (n) => String(n).padStart(2, '0');

export function utc(unixS) {
  const d = new Date(unixS * 1000);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}Z`;
}

// A time in UTC, with the local time on hover.
export function time(unixS) {
  if (unixS === null || unixS === undefined) return h('span', { text: '—' });
  return h('time', { datetime: new Date(unixS * 1000).toISOString(), title: 'local: ' + new Date(unixS * 1000).toString(), text: utc(unixS) });
}

export function age(seconds) {
  if (seconds < 120) return seconds + ' s';
  if (seconds < 7200) return Math.round(seconds / 60) + ' min';
  if (seconds < 172800) return Math.round(seconds / 3600) + ' h';
  return Math.round(seconds / 86400) + ' d';
}

export function short(hex) {
  if (!hex) return '—';
  const s = String(hex);
  return s.length > 14 ? s.slice(0, 8) + '…' + s.slice(-4) : s;
}

export function badge(text) {
  return h('span', { class: 'badge ' + String(text).replace(/[^a-z_]/g, ''), text });
}

export function table(columns, rows, { onRow, empty = 'Nothing here yet.' } = {}) {
  if (rows.length === 0) return notice('empty', empty);
  return h(
    'table',
    {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : null, text: c.title })))),
    h(
      'tbody',
      {},
      rows.map((r) =>
        h(
          'tr',
          { class: onRow ? 'clickable' : null, onclick: onRow ? () => onRow(r) : null },
          columns.map((c) => h('td', { class: c.num ? 'num' : null }, c.cell(r))),
        ),
      ),
    ),
  );
}

// A datetime-local input's value read as UTC, in unix seconds (empty → undefined).
export function inputUnixS(value) {
  if (!value) return undefined;
  const ms = Date.parse(value + (value.length === 16 ? ':00Z' : 'Z'));
  return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000);
}

export const now = () => Math.floor(Date.now() / 1000);
