// Finance: reconciliation runs with their tie-out, a new run, each run's exceptions by class
// with their notes (add one from the page), and the CSV and JSON-lines downloads the CLI
// writes (the same admin API calls).

import { call, get, path, post } from '../api.js';
import { amount, badge, clear, errorNotice, h, notice, table, time } from '../dom.js';

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: name });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function rangeBody(form) {
  const v = (n) => form.elements.namedItem(n).value.trim();
  if (v('mode') === 'resume') return { resume: true };
  if (v('mode') === 'blocks') return { from_block: Number(v('from')), to_block: Number(v('to')) };
  return { from_time: v('from'), to_time: v('to') };
}

export async function render(root, ctx) {
  const runs = (await get('/admin/reconcile/runs', { limit: 50 })).runs;
  if (ctx.stale()) return;
  clear(root);
  const status = h('div');
  const exceptions = h('div');
  const redraw = () => render(root, ctx).catch((e) => clear(root).appendChild(errorNotice(e)));
  const form = h('form', { class: 'filters', 'data-form': 'reconcile' },
    h('label', {}, 'Range', h('select', { name: 'mode' },
      h('option', { value: 'blocks', text: 'blocks (from, to)' }),
      h('option', { value: 'times', text: 'times (RFC 3339, end exclusive)' }),
      h('option', { value: 'resume', text: 'resume from the cursor' }))),
    h('label', {}, 'From', h('input', { name: 'from', placeholder: '0 or 2026-11-01T00:00:00Z' })),
    h('label', {}, 'To', h('input', { name: 'to', placeholder: '200 or 2026-12-01T00:00:00Z' })),
    h('label', {}, 'Confirmations', h('input', { name: 'confirmations', size: 4, placeholder: 'default' })),
    h('button', { type: 'submit', class: 'primary', 'data-action': 'run', text: 'Run reconciliation' }),
    h('button', { type: 'button', 'data-action': 'csv', text: 'Run and download CSV' }));
  const body = () => {
    const b = rangeBody(form);
    const c = form.elements.namedItem('confirmations').value.trim();
    if (c) b.confirmations = Number(c);
    return b;
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(status).appendChild(notice('loading', 'Reconciling… (reads the chain; may take a while)'));
    try {
      const r = await post('/admin/reconcile', body());
      await redraw();
      clear(status).appendChild(h('div', { class: 'notice ok', text: r.run_id ? `Run ${r.run_id} recorded.` : 'Nothing new to reconcile.' }));
    } catch (e) {
      clear(status).appendChild(errorNotice(e));
    }
  });
  form.querySelector('[data-action=csv]').addEventListener('click', async () => {
    try {
      const csv = await call('POST', '/admin/reconcile', { body: body(), query: { format: 'csv' }, text: true });
      download('reconciliation.csv', 'text/csv', csv);
      clear(status).appendChild(h('div', { class: 'notice ok', text: 'CSV downloaded (the run is recorded too).' }));
    } catch (e) {
      clear(status).appendChild(errorNotice(e));
    }
  });
  const exportAudit = h('button', { type: 'button', 'data-action': 'audit-export', text: 'Download the audit trail (JSON lines)', onclick: async () => {
    try {
      download('audit.jsonl', 'application/x-ndjson', await call('GET', '/admin/audit/export', { text: true }));
    } catch (e) {
      clear(status).appendChild(errorNotice(e));
    }
  } });
  root.append(
    h('h2', { text: 'New run' }), form, status,
    h('h2', { text: 'Runs' }),
    table([
      { title: 'Run', num: true, cell: (r) => String(r.id) },
      { title: 'Chain', num: true, cell: (r) => String(r.chain_id) },
      { title: 'Blocks', cell: (r) => `${r.from_block}–${r.to_block}` },
      { title: 'Finished', cell: (r) => time(r.finished_unix_s) },
      { title: 'Counts', cell: (r) => Object.entries(r.counts).map(([k, n]) => h('div', { text: `${k}: ${n}` })) },
      { title: 'Chain total', num: true, cell: (r) => amount(r.chain_total_atomic) },
      { title: 'Matched', num: true, cell: (r) => amount(r.matched_total_atomic) },
      { title: 'Tie-out', cell: (r) => (r.tie_out_holds ? h('span', { class: 'ok', text: 'holds' }) : h('span', { class: 'error', text: 'does not hold' })) },
    ], runs, { onRow: (r) => showExceptions(exceptions, r).catch((e) => clear(exceptions).appendChild(errorNotice(e))), empty: 'No reconciliation run yet. Run one above or with `tollgate admin reconcile run`.' }),
    exceptions,
    h('h2', { text: 'Exports' }), exportAudit,
  );
}

async function showExceptions(root, run) {
  clear(root).appendChild(notice('loading', `Loading the exceptions of run ${run.id}…`));
  const list = (await get(path('reconcile', 'runs', run.id, 'exceptions'))).exceptions;
  clear(root).appendChild(h('h2', { text: `Exceptions of run ${run.id}` }));
  if (list.length === 0) {
    root.appendChild(notice('empty', 'Every transfer and entry matched: nothing to resolve.'));
    return;
  }
  const classes = [...new Set(list.map((x) => x.class))].sort();
  for (const c of classes) {
    root.appendChild(h('h3', {}, badge(c), ` ${list.filter((x) => x.class === c).length}`));
    for (const x of list.filter((y) => y.class === c)) {
      const notes = h('div');
      root.appendChild(h('div', { class: 'detail', 'data-exception': x.id },
        h('dl', {}, Object.entries(x).map(([k, v]) => [h('dt', { text: k }), h('dd', { text: cell(k, v) })])),
        notes));
      await showNotes(notes, x);
    }
  }
}

// `*_atomic` amounts in token units with the atomic value; the rest (token units already) as is.
function cell(k, v) {
  if (v === null || v === undefined) return '—';
  // The admin API gives each amount in token units and its atomic integer as `<name>_atomic`.
  if (k.startsWith('amount_') && k.endsWith('_atomic')) {
    try {
      return `${amount(BigInt(v).toString())} (${BigInt(v).toString()} atomic)`;
    } catch (e) {
      return String(v);
    }
  }
  return String(v);
}

async function showNotes(root, x) {
  const notes = (await get(path('reconcile', 'exceptions', x.id, 'notes'))).notes;
  clear(root);
  root.appendChild(table([
    { title: 'At', cell: (n) => time(n.at_unix_s) },
    { title: 'Who', cell: (n) => h('code', { text: n.who }) },
    { title: 'Note', cell: (n) => h('span', { class: 'note', text: n.why }) },
  ], notes, { empty: 'No note yet.' }));
  const why = h('input', { name: 'why', size: 60, placeholder: 'why this is fine, or what was done' });
  const form = h('form', { class: 'inline', 'data-note-form': x.id }, why, h('button', { type: 'submit', text: 'Add note' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await post(path('reconcile', 'exceptions', x.id, 'notes'), { why: why.value });
      await showNotes(root, x);
    } catch (e) {
      root.appendChild(errorNotice(e));
    }
  });
  root.appendChild(form);
}
