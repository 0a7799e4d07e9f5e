// The users view: users by prefix, a page at a time with the API's cursor;
// a dialog that shows one user's roles and permissions and saves changes
// with `PATCH /api/users/{username}`, and deletes the user after a
// confirmation.

import { api, query, seg } from './api.js';
import { h, fill, formatTime, confirmDialog, flash } from './dom.js';
import { permissionsEditor, permissionsList, rolesField } from './permissions.js';

const PAGE = 100;
/** How often the shown page is re-read while visible (ms). */
const REFRESH_MS = 2000;

export function usersView(panel) {
  const view = { prefix: '', cursors: [null], page: 0, nextCursor: null, timer: null, generation: 0, key: '' };
  const search = h('input', { id: 'users-prefix', type: 'search', spellcheck: 'false', autocapitalize: 'none' });
  const tbody = h('tbody');
  const error = h('p', { class: 'field-error', role: 'alert' });
  const empty = h('p', { class: 'empty muted' });
  const prev = h('button', { type: 'button', class: 'secondary', text: 'Previous users' });
  const next = h('button', { type: 'button', class: 'secondary', text: 'Next users' });
  const info = h('span', { class: 'muted' });
  fill(panel,
    h('h2', { class: 'visually-hidden', text: 'Users' }),
    h('div', { class: 'toolbar' },
      h('div', { class: 'field inline' }, h('label', { for: 'users-prefix', text: 'Search users' }), search)),
    error,
    h('div', { class: 'table-scroll' },
      h('table', { class: 'users', 'aria-label': 'Users' },
        h('thead', {}, h('tr', {}, ['Username', 'Roles', 'Permissions', 'Origin', 'Credential', 'Created', ''].map((c) => h('th', { scope: 'col', text: c })))),
        tbody)),
    empty,
    h('div', { class: 'toolbar pager' }, prev, info, next));

  async function load() {
    const generation = view.generation;
    try {
      const page = await api('GET', `/api/users${query({ prefix: view.prefix, limit: PAGE, cursor: view.cursors[view.page] })}`);
      if (generation !== view.generation) return;
      view.nextCursor = page.nextCursor || null;
      const key = JSON.stringify(page.items);
      if (key !== view.key) { view.key = key; render(page.items); }
      error.textContent = '';
    } catch (e) {
      if (e.status !== 401) error.textContent = `Cannot list the users. ${e.describe()}`;
    }
    prev.disabled = view.page === 0;
    next.disabled = !view.nextCursor;
    info.textContent = `Page ${view.page + 1}`;
  }

  function render(items) {
    fill(tbody, items.map((u) => h('tr', {},
      h('td', {}, h('button', { type: 'button', class: 'link', text: u.username, 'aria-label': `Edit ${u.username}`, onclick: () => openUser(u.username) })),
      h('td', {}, u.roles.length ? u.roles.map((r) => h('span', { class: 'tag', text: r })) : h('span', { class: 'muted', text: 'none' })),
      h('td', {}, permissionsList(u.permissions)),
      h('td', { text: u.origin }),
      h('td', { text: [u.hasPassword ? 'password' : null, u.certificateFingerprint ? 'certificate' : null].filter(Boolean).join(', ') || 'none' }),
      h('td', {}, h('time', { datetime: u.createdAt, text: formatTime(u.createdAt) })),
      h('td', {}, h('button', { type: 'button', class: 'secondary small', text: 'Edit', 'aria-label': `Edit user ${u.username}`, onclick: () => openUser(u.username) })))));
    empty.textContent = items.length ? '' : (view.prefix ? `No users whose name starts with “${view.prefix}”.` : 'No users.');
  }

  function restart() {
    view.generation += 1;
    view.cursors = [null];
    view.page = 0;
    view.key = '';
    load();
  }

  async function openUser(username) {
    let user;
    let roles = [];
    try {
      [user, roles] = await Promise.all([
        api('GET', `/api/users/${seg(username)}`),
        api('GET', '/api/roles').then((r) => r.items.map((x) => x.name)),
      ]);
    } catch (e) { error.textContent = e.describe(); return; }
    const rolesInput = rolesField(user.roles, roles, { label: 'Roles', id: 'user-roles' });
    const perms = permissionsEditor(user.permissions, { legend: 'Permissions' });
    const errorEl = h('p', { class: 'field-error', role: 'alert' });
    const save = h('button', { type: 'button', text: 'Save' });
    const del = h('button', { type: 'button', class: 'danger', text: 'Delete user' });
    const close = h('button', { type: 'button', class: 'secondary', text: 'Close', onclick: () => dialog.close() });
    const dialog = h('dialog', { class: 'user-dialog', 'aria-labelledby': 'user-title' },
      h('h2', { id: 'user-title', text: `User ${user.username}` }),
      h('dl', { class: 'details' },
        h('dt', { text: 'Origin' }), h('dd', { text: user.origin }),
        h('dt', { text: 'Created' }), h('dd', { text: formatTime(user.createdAt) }),
        h('dt', { text: 'Password' }), h('dd', { text: user.hasPassword ? 'yes' : 'no' }),
        user.certificateFingerprint ? [h('dt', { text: 'Certificate SHA-256' }), h('dd', {}, h('code', { class: 'wrap', text: user.certificateFingerprint })),
          h('dt', { text: 'Certificate expires' }), h('dd', { text: formatTime(user.certificateExpires) })] : null),
      rolesInput.element, perms.element, errorEl,
      h('div', { class: 'dialog-actions' }, close, del, save));
    save.addEventListener('click', async () => {
      errorEl.textContent = ''; rolesInput.error(''); perms.error('');
      let body;
      try { body = { roles: rolesInput.value(), permissions: perms.value() }; } catch (e) { perms.error(e.message); return; }
      save.disabled = true;
      try {
        await api('PATCH', `/api/users/${seg(user.username)}`, body);
        flash(`Saved ${user.username}'s roles and permissions.`);
        dialog.close();
        view.key = '';
        load();
      } catch (e) {
        if (e.status === 422 && /role/.test(e.rule || '')) rolesInput.error(e.describe());
        else if (e.status === 422) perms.error(e.describe());
        else errorEl.textContent = e.describe();
      } finally { save.disabled = false; }
    });
    del.addEventListener('click', async () => {
      const ok = await confirmDialog(`Delete user ${user.username}?`,
        'It can no longer log in or connect, its tokens stop working at once, and its live MQTT sessions are closed.',
        'Delete');
      if (!ok) return;
      try {
        await api('DELETE', `/api/users/${seg(user.username)}`);
        flash(`Deleted ${user.username}.`);
        dialog.close();
        view.key = '';
        load();
      } catch (e) { errorEl.textContent = e.describe(); }
    });
    dialog.addEventListener('close', () => dialog.remove());
    document.body.append(dialog);
    dialog.showModal();
    rolesInput.input.focus();
  }

  let timer = null;
  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => { view.prefix = search.value.trim(); restart(); }, 250);
  });
  next.addEventListener('click', () => { if (view.nextCursor) { view.cursors[view.page + 1] = view.nextCursor; view.page += 1; view.generation += 1; view.key = ''; load(); } });
  prev.addEventListener('click', () => { if (view.page > 0) { view.page -= 1; view.generation += 1; view.key = ''; load(); } });

  return {
    start() { this.stop(); load(); view.timer = setInterval(() => { if (!panel.hidden) load(); }, REFRESH_MS); },
    stop() { clearInterval(view.timer); view.timer = null; view.key = ''; view.generation += 1; tbody.replaceChildren(); },
    refresh: () => { view.key = ''; return load(); },
  };
}
