// Drives the web console in Debian's headless Chromium with playwright-core (no browser
// download: executablePath /usr/bin/chromium). Started by crates/cli/tests/it/console.rs,
// which seeds the gateway and asserts on the JSON this prints; this script only acts and
// reports what the pages showed.
//
// Input: CONSOLE_SPEC, a JSON file {admin_url, tokens: {operator, provider, finance},
// xss, deferred_route, price, wallet, head_block, out_dir}. Output: one JSON object on stdout.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const spec = JSON.parse(readFileSync(process.env.CONSOLE_SPEC, 'utf8'));
const STEP_MS = 15000;
const report = { console_errors: [], xss_fired: false };

const profile = mkdtempSync(join(tmpdir(), 'tollgate-console-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 900 },
  acceptDownloads: true,
});
context.setDefaultTimeout(STEP_MS);

async function open(role) {
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') report.console_errors.push(`${role}: ${m.text()}`); });
  page.on('pageerror', (e) => report.console_errors.push(`${role}: pageerror ${e.message}`));
  await page.goto(spec.admin_url + '/console/');
  await page.fill('#token', spec.tokens[role]);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#page[data-ready]');
  return page;
}

async function go(page, id) {
  const before = await page.getAttribute('#page', 'data-ready');
  await page.click(`nav a[data-page=${id}]`);
  await page.waitForFunction((b) => {
    const p = document.getElementById('page');
    return p.getAttribute('data-ready') && p.getAttribute('data-ready') !== b;
  }, before);
}

async function shot(page, name) {
  await page.screenshot({ path: join(spec.out_dir, name + '.png'), fullPage: true });
}

const texts = (page, selector) => page.$$eval(selector, (els) => els.map((e) => e.textContent));
const elements = (page, selector) => page.$$eval(selector, (els) => els.length);

// Searches the ledger entries by state and endpoint, waits for the new results, opens the
// first entry and reports its row states, its fields and its event history.
async function ledgerEntry(page, state, route) {
  await page.selectOption('[data-form=entries] select[name=state]', state);
  await page.fill('[data-form=entries] input[name=route]', route);
  await page.click('[data-form=entries] button[type=submit]');
  await page.waitForFunction(({ state, route }) => {
    const rows = [...document.querySelectorAll('[data-form=entries] + div table tbody tr.clickable')];
    return rows.length > 0 && rows.every((r) => (!state || r.children[5].textContent === state)
      && (!route || r.children[2].textContent.includes(route)));
  }, { state, route });
  const seen = { row_states: await texts(page, '[data-form=entries] + div table tbody tr.clickable td:nth-child(6)') };
  await page.click('[data-form=entries] + div table tbody tr.clickable');
  await page.waitForSelector('[data-entry] table tbody tr');
  seen.entry_id = await page.getAttribute('[data-entry]', 'data-entry');
  const fields = await page.$$eval('[data-entry] dl dt', (dts) => Object.fromEntries(dts.map((dt) => [dt.textContent, dt.nextElementSibling.textContent])));
  seen.state = fields.state;
  seen.mode = fields.mode;
  seen.event_states = await texts(page, '[data-entry] table tbody tr td:nth-child(3)');
  seen.event_causes = await texts(page, '[data-entry] table tbody tr td:nth-child(4)');
  return seen;
}

try {
  // The operator: overview counts, endpoints (the XSS description, a price change), the
  // ledger with an entry's events, the audit trail, a wallet revoked.
  const op = await open('operator');
  report.operator = {};
  report.operator.nav = await texts(op, 'nav a');
  await op.waitForSelector('[data-kpi=paid_calls]');
  report.operator.paid_calls = (await op.textContent('[data-kpi=paid_calls] .value')).trim();
  report.operator.settled = (await op.textContent('[data-state-count=settled]')).trim();
  report.operator.voided_count = (await op.textContent('[data-state-count=voided]')).trim();
  await shot(op, 'overview');

  await go(op, 'endpoints');
  report.operator.descriptions = await texts(op, '.description');
  report.operator.images_in_descriptions = await op.$$eval('.description img, .description script', (els) => els.length);
  report.operator.service_names = await texts(op, '[data-service] .service-name');
  report.operator.tags = await texts(op, '[data-service] .tag');
  let made = await elements(op, '[data-service] img, [data-service] script');
  // A missing optional part must leave nothing, not the text "null" or "undefined".
  report.operator.endpoints_stray_texts = await op.$$eval('#page *', (els) => els.flatMap((e) => [...e.childNodes])
    .filter((n) => n.nodeType === Node.TEXT_NODE && ['null', 'undefined'].includes(n.textContent.trim())).length);
  await op.fill(`[data-price-form="${spec.price.path}"] input`, spec.price.value);
  await op.click(`[data-price-form="${spec.price.path}"] button`);
  await op.waitForSelector('[data-price-set]');
  report.operator.price_set = await op.textContent('[data-price-set]');
  await shot(op, 'endpoints');

  await go(op, 'ledger');
  await op.waitForSelector('table tbody tr.clickable');
  report.operator.entry_rows = (await op.$$('table tbody tr.clickable')).length;
  await op.click('table tbody tr.clickable:has(.badge.settled)');
  await op.waitForSelector('[data-entry] table tbody tr');
  report.operator.event_states = await texts(op, '[data-entry] table tbody tr td:nth-child(3)');
  await shot(op, 'ledger');
  report.operator.voided = await ledgerEntry(op, 'voided', '');
  report.operator.deferred = await ledgerEntry(op, '', spec.deferred_route);
  await op.click('[data-tab=audit]');
  await op.waitForSelector('[data-audit=intact]');
  await op.waitForSelector('[data-form=audit] ~ div table tbody tr');
  report.operator.audit_rows = (await op.$$('[data-form=audit] ~ div table tbody tr')).length;
  await shot(op, 'audit');

  await go(op, 'wallets');
  await op.fill('[data-form=revoke-wallet] input[name=wallet]', spec.wallet);
  await op.click('[data-form=revoke-wallet] button.danger');
  await op.click('[data-confirm=yes]');
  await op.waitForSelector('[data-wallet-action=reinstate]');
  report.operator.revoked_wallets = await texts(op, 'table tbody tr td:nth-child(2) code');
  report.operator.wallet_endpoints = await texts(op, '.wallet-endpoint');
  made += await elements(op, 'table tbody img, table tbody script');
  report.operator.elements_in_service_and_wallets = made;
  await shot(op, 'wallets');

  // Finance: a reconciliation run over the chain, its exceptions, a note with the payload.
  const fin = await open('finance');
  report.finance = { nav: await texts(fin, 'nav a') };
  await go(fin, 'finance');
  await fin.selectOption('[data-form=reconcile] select[name=mode]', 'blocks');
  await fin.fill('[data-form=reconcile] input[name=from]', '0');
  await fin.fill('[data-form=reconcile] input[name=to]', String(spec.head_block));
  await fin.fill('[data-form=reconcile] input[name=confirmations]', '1');
  await fin.click('[data-form=reconcile] [data-action=run]');
  await fin.waitForSelector('table tbody tr.clickable');
  report.finance.runs = (await fin.$$('table tbody tr.clickable')).length;
  await fin.click('table tbody tr.clickable');
  await fin.waitForSelector('[data-exception] [data-note-form]');
  await fin.fill('[data-exception] [data-note-form] input', spec.xss);
  await fin.click('[data-exception] [data-note-form] button');
  await fin.waitForSelector('[data-exception] .note');
  report.finance.notes = await texts(fin, '[data-exception] .note');
  report.finance.elements_in_notes = await fin.$$eval('.note img, .note script', (els) => els.length);
  await shot(fin, 'finance');
  // The CSV download of the same range (the run form was drawn anew after the run).
  await fin.selectOption('[data-form=reconcile] select[name=mode]', 'blocks');
  await fin.fill('[data-form=reconcile] input[name=from]', '0');
  await fin.fill('[data-form=reconcile] input[name=to]', String(spec.head_block));
  await fin.fill('[data-form=reconcile] input[name=confirmations]', '1');
  const [download] = await Promise.all([fin.waitForEvent('download'), fin.click('[data-form=reconcile] [data-action=csv]')]);
  report.finance.csv_name = download.suggestedFilename();
  report.finance.csv = readFileSync(await download.path(), 'utf8');

  // The provider: only its own provider's endpoints and entries.
  const prov = await open('provider');
  report.provider = { nav: await texts(prov, 'nav a') };
  await prov.waitForSelector('[data-kpi=paid_calls]');
  report.provider.paid_calls = (await prov.textContent('[data-kpi=paid_calls] .value')).trim();
  await go(prov, 'endpoints');
  report.provider.sections = await prov.$$eval('section[data-provider]', (els) => els.map((e) => e.getAttribute('data-provider')));
  await go(prov, 'ledger');
  await prov.waitForSelector('table tbody tr.clickable');
  report.provider.entry_routes = await texts(prov, 'table tbody tr.clickable td:nth-child(3)');
  await shot(prov, 'provider-ledger');

  for (const p of [op, fin, prov]) {
    if (await p.evaluate(() => window.__xss !== undefined)) report.xss_fired = true;
  }
} catch (e) {
  report.failure = String(e && e.stack ? e.stack : e);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(report) + '\n');
