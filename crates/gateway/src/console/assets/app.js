// The console's shell: log in (whoami), the role's pages in the navigation, and the page of the
// URL's fragment (#overview, #ledger, ...). Pages are modules with `render(root, ctx)`.

import { ApiError, get, onUnauthorized, setToken, token } from './api.js';
import { clear, errorNotice, h, notice } from './dom.js';
import * as overview from './pages/overview.js';
import * as ledger from './pages/ledger.js';
import * as endpoints from './pages/endpoints.js';
import * as wallets from './pages/wallets.js';
import * as finance from './pages/finance.js';

// Which pages each role may open: the admin API enforces the same (a page a role cannot see
// would only show 403s).
const PAGES = [
  { id: 'overview', title: 'Overview', roles: ['operator', 'provider', 'finance'], module: overview },
  { id: 'ledger', title: 'Ledger & audit', roles: ['operator', 'provider', 'finance'], module: ledger },
  { id: 'endpoints', title: 'Endpoints', roles: ['operator', 'provider'], module: endpoints },
  { id: 'wallets', title: 'Wallets', roles: ['operator', 'provider'], module: wallets },
  { id: 'finance', title: 'Finance', roles: ['operator', 'finance'], module: finance },
];

const $ = (id) => document.getElementById(id);
let whoami = null;
let generation = 0;

function showLogin(message) {
  whoami = null;
  setToken(null);
  clear($('nav'));
  $('who').textContent = '';
  $('logout').hidden = true;
  $('page').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token').focus();
}

async function login(candidate) {
  setToken(candidate);
  try {
    whoami = await get('/admin/whoami');
  } catch (e) {
    showLogin(e instanceof ApiError && e.status === 401 ? 'That token is unknown or revoked.' : e.message);
    return;
  }
  $('login').hidden = true;
  $('page').hidden = false;
  $('logout').hidden = false;
  $('who').textContent = whoami.role + (whoami.provider ? ' · ' + whoami.provider : '') + ' · token ' + whoami.token_id;
  route();
}

function pagesOf(role) {
  return PAGES.filter((p) => p.roles.includes(role));
}

async function route() {
  if (!whoami) return;
  const pages = pagesOf(whoami.role);
  const wanted = window.location.hash.replace(/^#/, '').split('?')[0];
  const page = pages.find((p) => p.id === wanted) || pages[0];
  clear($('nav'));
  for (const p of pages) {
    $('nav').appendChild(h('a', { href: '#' + p.id, class: p === page ? 'active' : null, 'data-page': p.id, text: p.title }));
  }
  const root = clear($('page'));
  root.setAttribute('data-page', page.id);
  const mine = ++generation;
  root.appendChild(h('h1', { text: page.title }));
  const body = h('div', {}, notice('loading', 'Loading…'));
  root.appendChild(body);
  try {
    await page.module.render(body, { whoami, stale: () => mine !== generation });
  } catch (e) {
    if (mine !== generation) return;
    clear(body).appendChild(e instanceof ApiError ? errorNotice(e) : notice('error', 'The page failed: ' + e.message + '. Reload; if it persists, use `tollgate admin`.'));
  }
  root.setAttribute('data-ready', String(mine));
}

onUnauthorized(() => showLogin('The token was refused (unknown or revoked). Log in again.'));

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    $('token').value = '';
    login(t);
  });
  $('logout').addEventListener('click', () => showLogin(''));
  window.addEventListener('hashchange', route);
  const saved = token();
  if (saved) login(saved);
  else showLogin('');
});
