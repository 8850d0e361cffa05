// The admin API client. The token lives in this tab's sessionStorage only and travels as a
// bearer header: never in a URL, never in a cookie, so no other site can make the browser
// send it (no CSRF by construction). Errors carry the API's stable code and safe message.

const KEY = 'tollgate.console.token';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let unauthorized = () => {};

// Called once by app.js: a 401 anywhere means the token was revoked or mistyped.
export function onUnauthorized(f) {
  unauthorized = f;
}

// A path of the admin API from segments, each percent-encoded (provider ids, wallets, paths).
export function path(...segments) {
  return '/admin/' + segments.map((s) => encodeURIComponent(String(s))).join('/');
}

export async function call(method, url, { query, body, text } = {}) {
  const target = new URL(url, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') target.searchParams.set(k, String(v));
  }
  const headers = { authorization: 'Bearer ' + (token() || '') };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(target, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
  } catch (e) {
    throw new ApiError(0, 'unreachable', 'The gateway did not answer. Check that it is running, then reload.');
  }
  if (!resp.ok) {
    let code = 'http_' + resp.status;
    let message = resp.statusText || 'request failed';
    try {
      const j = await resp.json();
      code = j.error.code;
      message = j.error.message;
    } catch (e) {
      // Not the error envelope (a 405, a proxy): keep the status.
    }
    if (resp.status === 401) unauthorized();
    throw new ApiError(resp.status, code, message);
  }
  return text ? resp.text() : resp.json();
}

export const get = (url, query) => call('GET', url, { query });
export const post = (url, body, query) => call('POST', url, { body, query });
export const put = (url, body, query) => call('PUT', url, { body, query });
