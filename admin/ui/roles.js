// The roles view: every defined role (`GET /api/roles`, capped at 1,000,
// so one answer), a dialog to create or edit one (`PUT /api/roles/{name}`)
// and to delete it after a confirmation.

import { api, seg } from './api.js';
import { h, fill, confirmDialog, flash } from './dom.js';
import { permissionsEditor, permissionsList } from './permissions.js';

export function rolesView(panel) {
  const tbody = h('tbody');
  const error = h('p', { class: 'field-error', role: 'alert' });
  const create = h('button', { type: 'button', text: 'New role', onclick: () => openRole(null) });
  fill(panel,
    h('h2', { class: 'visually-hidden', text: 'Roles' }),
    h('div', { class: 'toolbar' }, create,
      h('p', { class: 'muted small', text: 'A user may do what its direct permissions and its roles allow. Resources may use +, # and {username}.' })),
    error,
    h('div', { class: 'table-scroll' },
      h('table', { class: 'roles', 'aria-label': 'Roles' },
        h('thead', {}, h('tr', {}, ['Name', 'Permissions', ''].map((c) => h('th', { scope: 'col', text: c })))),
        tbody)));

  async function load() {
    try {
      const { items } = await api('GET', '/api/roles');
      fill(tbody, items.map((r) => h('tr', {},
        h('td', {}, h('button', { type: 'button', class: 'link', text: r.name, 'aria-label': `Edit role ${r.name}`, onclick: () => openRole(r) })),
        h('td', {}, permissionsList(r.permissions)),
        h('td', {}, h('button', { type: 'button', class: 'secondary small', text: 'Edit', 'aria-label': `Edit ${r.name}`, onclick: () => openRole(r) })))));
      error.textContent = '';
    } catch (e) {
      if (e.status !== 401) error.textContent = `Cannot list the roles. ${e.describe()}`;
    }
  }

  function openRole(role) {
    const isNew = role === null;
    const name = h('input', { id: 'role-name', type: 'text', value: isNew ? '' : role.name, readonly: !isNew,
      spellcheck: 'false', autocapitalize: 'none', 'aria-describedby': 'role-name-hint' });
    const nameError = h('p', { class: 'field-error', role: 'alert' });
    const perms = permissionsEditor(isNew ? [] : role.permissions, { legend: 'Permissions' });
    const errorEl = h('p', { class: 'field-error', role: 'alert' });
    const save = h('button', { type: 'button', text: 'Save role' });
    const del = isNew ? null : h('button', { type: 'button', class: 'danger', text: 'Delete role' });
    const close = h('button', { type: 'button', class: 'secondary', text: 'Close', onclick: () => dialog.close() });
    const dialog = h('dialog', { class: 'role-dialog', 'aria-labelledby': 'role-title' },
      h('h2', { id: 'role-title', text: isNew ? 'New role' : `Role ${role.name}` }),
      h('div', { class: 'field' }, h('label', { for: 'role-name', text: 'Role name' }), name,
        h('p', { id: 'role-name-hint', class: 'muted small', text: '1 to 64 characters from A–Z a–z 0–9 . _ : -' }), nameError),
      perms.element, errorEl,
      h('div', { class: 'dialog-actions' }, close, del, save));
    save.addEventListener('click', async () => {
      errorEl.textContent = ''; nameError.textContent = ''; perms.error('');
      const roleName = name.value.trim();
      if (!roleName) { nameError.textContent = 'A role needs a name.'; name.focus(); return; }
      let permissions;
      try { permissions = perms.value(); } catch (e) { perms.error(e.message); return; }
      try {
        await api('PUT', `/api/roles/${seg(roleName)}`, { permissions });
        flash(`Saved role ${roleName}.`);
        dialog.close();
        load();
      } catch (e) {
        if (e.status === 422 && e.rule === 'role_name') nameError.textContent = e.describe();
        else if (e.status === 422) perms.error(e.describe());
        else errorEl.textContent = e.describe();
      }
    });
    if (del) {
      del.addEventListener('click', async () => {
        const ok = await confirmDialog(`Delete role ${role.name}?`,
          'Users that hold it keep its name, and it grants them nothing until a role of that name is defined again.', 'Delete');
        if (!ok) return;
        try {
          await api('DELETE', `/api/roles/${seg(role.name)}`);
          flash(`Deleted role ${role.name}.`);
          dialog.close();
          load();
        } catch (e) { errorEl.textContent = e.describe(); }
      });
    }
    dialog.addEventListener('close', () => dialog.remove());
    document.body.append(dialog);
    dialog.showModal();
    (isNew ? name : close).focus();
  }

  return {
    start() { load(); },
    stop() { tbody.replaceChildren(); },
    refresh: load,
  };
}
