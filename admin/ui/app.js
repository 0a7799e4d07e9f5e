// The Client Registry View's entry point: the login form, the session
// (token in sessionStorage, "Log out" forgets it), the tabs, and starting
// and stopping the views.
//
// Module layout (all served from /ui/assets/<version>/, embedded in the
// binary by admin/src/ui.rs):
// - api.js: the API client, the token, errors in words.
// - dom.js: element builders (text only, never HTML strings), formats, the
//   confirmation dialog.
// - status.js: the lock state bar with its live countdown.
// - requests.js: the requests table, paging, filters, bulk actions.
// - grant-dialog.js: the Grant Access dialog.
// - permissions.js: the roles and permissions editors.
// - users.js, roles.js: the users and roles views.
// - rules.js: the auto-approval rules view.
// - audit.js: the audit log view.

import { api, session, ApiError } from './api.js';
import { formatClock } from './dom.js';
import { registryState } from './status.js';
import { requestsView } from './requests.js';
import { usersView } from './users.js';
import { rolesView } from './roles.js';
import { rulesView } from './rules.js';
import { auditView } from './audit.js';

const $ = (id) => document.getElementById(id);

const loginView = $('login-view');
const appView = $('app-view');
const loginForm = $('login-form');
const loginError = $('login-error');
const loginSubmit = $('login-submit');
const usernameInput = $('login-username');
const passwordInput = $('login-password');

const registry = registryState();
const panels = {
  requests: { tab: $('tab-requests'), panel: $('requests-panel') },
  users: { tab: $('tab-users'), panel: $('users-panel') },
  roles: { tab: $('tab-roles'), panel: $('roles-panel') },
  rules: { tab: $('tab-rules'), panel: $('rules-panel') },
  audit: { tab: $('tab-audit'), panel: $('audit-panel') },
};
panels.requests.view = requestsView(panels.requests.panel, registry);
panels.users.view = usersView(panels.users.panel);
panels.roles.view = rolesView(panels.roles.panel);
panels.rules.view = rulesView(panels.rules.panel);
panels.audit.view = auditView(panels.audit.panel);

let retryTimer = null;

function showLogin(message = '') {
  registry.stop();
  for (const p of Object.values(panels)) { p.view.stop(); p.started = false; }
  for (const d of document.querySelectorAll('dialog')) d.remove();
  appView.hidden = true;
  $('session').hidden = true;
  $('whoami').textContent = '';
  $('flash').textContent = '';
  loginView.hidden = false;
  passwordInput.value = '';
  loginError.textContent = message;
  usernameInput.focus();
}

function showApp() {
  loginView.hidden = true;
  appView.hidden = false;
  $('session').hidden = false;
  $('whoami').textContent = `Signed in as ${session.username() || '?'}`;
  registry.start();
  selectTab('requests');
}

function selectTab(name) {
  for (const [key, p] of Object.entries(panels)) {
    const on = key === name;
    p.tab.setAttribute('aria-selected', String(on));
    p.tab.tabIndex = on ? 0 : -1;
    p.panel.hidden = !on;
  }
  const p = panels[name];
  if (name === 'requests') { if (!p.started) { p.view.start(); p.started = true; } else p.view.refresh(); }
  else p.view.start();
}

for (const [name, p] of Object.entries(panels)) {
  p.tab.addEventListener('click', () => selectTab(name));
  // Arrow keys move between tabs, as in every tab list.
  p.tab.addEventListener('keydown', (ev) => {
    const names = Object.keys(panels);
    const i = names.indexOf(name);
    let j = null;
    if (ev.key === 'ArrowRight') j = (i + 1) % names.length;
    if (ev.key === 'ArrowLeft') j = (i + names.length - 1) % names.length;
    if (j === null) return;
    ev.preventDefault();
    selectTab(names[j]);
    panels[names[j]].tab.focus();
  });
}

/** Counts down a 429's wait in the login error line. */
function showRetry(err) {
  clearInterval(retryTimer);
  const until = err.at + err.retryAfter * 1000;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left <= 0) {
      clearInterval(retryTimer);
      loginError.textContent = 'You can try to log in again now.';
      return;
    }
    loginError.textContent = `Too many failed logins. Try again in ${left} s (at ${formatClock(new Date(until))}).`;
  };
  tick();
  retryTimer = setInterval(tick, 1000);
}

loginForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearInterval(retryTimer);
  loginError.textContent = '';
  const username = usernameInput.value.trim();
  const password = passwordInput.value;
  if (!username || !password) {
    loginError.textContent = 'Enter a username and a password.';
    (username ? passwordInput : usernameInput).focus();
    return;
  }
  loginSubmit.disabled = true;
  try {
    const { token } = await api('POST', '/api/login', { username, password });
    session.set(token);
    // The token is only useful if its user is an admin: check once.
    await api('GET', '/api/client-registry');
    passwordInput.value = '';
    showApp();
  } catch (e) {
    session.clear();
    passwordInput.value = '';
    if (e.status === 401) loginError.textContent = 'Wrong username or password.';
    else if (e.status === 429 && e.retryAfter !== null) showRetry(e);
    else loginError.textContent = e instanceof ApiError ? e.describe() : String(e);
    passwordInput.focus();
  } finally {
    loginSubmit.disabled = false;
  }
});

$('logout').addEventListener('click', () => {
  session.clear();
  showLogin('You are logged out.');
});

session.onExpired(() => {
  session.clear();
  showLogin('Your session ended (the token expired or its user changed). Log in again.');
});

async function boot() {
  if (!session.token) { showLogin(); return; }
  try {
    await api('GET', '/api/client-registry');
    showApp();
  } catch (e) {
    if (e.status !== 401) { session.clear(); showLogin(e.describe()); }
  }
}

boot();
