// The admin API client of the Client Registry View.
//
// Holds the session token in memory and in sessionStorage (never a cookie:
// requests are sent with `credentials: 'omit'`, so there is nothing for
// another site to ride on). Every call has a 10 s deadline. Failures are an
// `ApiError` whose `describe()` says in words what went wrong, for the
// element next to the control that caused it.

import { formatClock } from './dom.js';

const TOKEN_KEY = 'fleetgate.token';
/** Deadline of one API call, in milliseconds. */
export const TIMEOUT_MS = 10000;
/** Deadline of one bulk decision (up to 10,000 grants, each hashed). */
export const BULK_TIMEOUT_MS = 120000;

let token = sessionStorage.getItem(TOKEN_KEY);
let onExpired = () => {};
/** The server's clock minus ours, from the `Date` header (ms). */
let skewMs = 0;

export const session = {
  get token() { return token; },
  set(value) { token = value; sessionStorage.setItem(TOKEN_KEY, value); },
  clear() { token = null; sessionStorage.removeItem(TOKEN_KEY); },
  /** Called once when the API answers 401 to a logged-in call. */
  onExpired(fn) { onExpired = fn; },
  /** The username in the token (its `sub`), for display only. */
  username() {
    try {
      const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(payload)).sub;
    } catch { return null; }
  },
};

/** Now, on the server's clock (ms since the epoch). */
export function serverNow() { return Date.now() + skewMs; }

export class ApiError extends Error {
  constructor(status, body, retryAfter, message) {
    super(message || (body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.retryAfter = retryAfter === null || retryAfter === undefined ? null : Number(retryAfter);
    this.at = Date.now();
  }

  /** The rule of a 422, if any. */
  get rule() { return this.body.rule || null; }

  /** The failure in words. */
  describe() {
    const detail = this.body.error || this.message;
    const retry = this.retryAfter !== null && Number.isFinite(this.retryAfter)
      ? this.retryAfter : null;
    switch (this.status) {
      case 0: return this.message;
      case 400: return `The gateway refused the request: ${detail}`;
      case 401: return `Not accepted: ${detail}`;
      case 403: return 'This account is not an administrator (it lacks the admin role).';
      case 404: return `Not found: ${detail}`;
      case 409: return `Conflict: ${detail}`;
      case 413: return 'The request is too large for the gateway.';
      case 422: return `Refused by policy${this.rule ? ` (${this.rule})` : ''}: ${detail}`;
      case 429: {
        if (retry === null) return 'Too many attempts. Try again later.';
        const when = new Date(this.at + retry * 1000);
        return `Too many failed logins. Try again in ${retry} s (at ${formatClock(when)}).`;
      }
      case 503: return `The gateway is unavailable (${detail}).` +
        (retry !== null ? ` Try again in ${retry} s.` : ' Try again shortly.');
      default: return `The gateway failed (HTTP ${this.status}): ${detail}`;
    }
  }
}

/** Percent-encodes one path segment. */
export const seg = (s) => encodeURIComponent(s);

/**
 * Calls the admin API. Resolves with the parsed JSON (null for 204);
 * rejects with an ApiError.
 */
export async function api(method, path, body, { timeoutMs = TIMEOUT_MS } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token && path !== '/api/login') headers.Authorization = `Bearer ${token}`;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    const why = e.name === 'AbortError'
      ? `The gateway did not answer within ${timeoutMs / 1000} s.`
      : 'Cannot reach the gateway (network error).';
    throw new ApiError(0, null, null, why);
  } finally {
    clearTimeout(timer);
  }
  const date = Date.parse(response.headers.get('Date') || '');
  // `Date` has a resolution of a second: only a real skew is corrected.
  if (!Number.isNaN(date)) {
    const skew = date - Date.now();
    skewMs = Math.abs(skew) > 2000 ? skew : 0;
  }
  if (response.status === 204) return null;
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const err = new ApiError(response.status, data, response.headers.get('Retry-After'));
    if (response.status === 401 && headers.Authorization) onExpired(err);
    throw err;
  }
  return data;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
