// The roles and permissions editors of the grant, user and role dialogs.
//
// A permission is {resource, operation, context} as the API defines it.
// The editor is a list of rows (resource text, operation and context
// selects, a remove button), each control named for assistive technology
// and for tests ("Resource 1", "Operation 1", "Remove permission 1").

import { h, fill } from './dom.js';

export const OPERATIONS = ['read', 'write', 'readWrite'];
export const CONTEXTS = ['mqtt', 'http'];
/** The API's caps: a resource is 1 to 256 bytes, at most 64 per list. */
export const RESOURCE_MAX = 256;
export const PERMISSIONS_MAX = 64;

/**
 * A permissions editor pre-filled with `initial`. Returns
 * { element, value(), set(list), error(message) }. `value()` throws an
 * Error with a sentence when a row is invalid.
 */
export function permissionsEditor(initial, { legend = 'Permissions', idPrefix = 'perm' } = {}) {
  const rows = h('div', { class: 'perm-rows' });
  const errorEl = h('p', { class: 'field-error', role: 'alert' });
  const addButton = h('button', { type: 'button', class: 'secondary small', text: 'Add permission',
    onclick: () => { addRow({ resource: '', operation: 'read', context: 'mqtt' }); renumber(); rows.lastChild.querySelector('input').focus(); } });
  const empty = h('p', { class: 'muted small', text: 'No permissions.' });
  const element = h('fieldset', { class: 'perm-editor' },
    h('legend', { text: legend }), empty, rows, addButton, errorEl);

  function addRow(p) {
    const resource = h('input', { type: 'text', value: p.resource, class: 'resource',
      spellcheck: 'false', autocapitalize: 'none', placeholder: 'devices/{username}/#' });
    const operation = h('select', { class: 'operation' },
      OPERATIONS.map((o) => h('option', { value: o, text: o, selected: o === p.operation })));
    const context = h('select', { class: 'context' },
      CONTEXTS.map((c) => h('option', { value: c, text: c, selected: c === p.context })));
    const remove = h('button', { type: 'button', class: 'secondary small', text: 'Remove',
      onclick: () => { row.remove(); renumber(); addButton.focus(); } });
    const row = h('div', { class: 'perm-row' }, resource, operation, context, remove);
    rows.append(row);
  }

  function renumber() {
    [...rows.children].forEach((row, i) => {
      const n = i + 1;
      row.querySelector('.resource').setAttribute('aria-label', `Resource ${n}`);
      row.querySelector('.operation').setAttribute('aria-label', `Operation ${n}`);
      row.querySelector('.context').setAttribute('aria-label', `Context ${n}`);
      row.querySelector('button').setAttribute('aria-label', `Remove permission ${n}`);
    });
    empty.hidden = rows.children.length > 0;
    addButton.disabled = rows.children.length >= PERMISSIONS_MAX;
  }

  function set(list) {
    fill(rows);
    for (const p of list || []) addRow(p);
    renumber();
  }

  function value() {
    const list = [...rows.children].map((row, i) => {
      const resource = row.querySelector('.resource').value.trim();
      if (!resource) throw new Error(`Permission ${i + 1} needs a resource (a topic filter or path).`);
      if (new TextEncoder().encode(resource).length > RESOURCE_MAX) {
        throw new Error(`Permission ${i + 1}: a resource is at most ${RESOURCE_MAX} bytes.`);
      }
      return { resource, operation: row.querySelector('.operation').value,
        context: row.querySelector('.context').value };
    });
    return list;
  }

  set(initial);
  return { element, value, set, error: (m) => { errorEl.textContent = m || ''; } };
}

/**
 * A roles field: comma-separated names, with the defined roles listed and
 * the names that are not defined flagged before the admin submits.
 */
export function rolesField(initial, definedRoles, { label = 'Roles', id = 'roles' } = {}) {
  const input = h('input', { id, type: 'text', value: (initial || []).join(', '),
    spellcheck: 'false', autocapitalize: 'none', 'aria-describedby': `${id}-hint ${id}-warning` });
  const defined = new Set(definedRoles || []);
  const hint = h('p', { id: `${id}-hint`, class: 'muted small',
    text: defined.size ? `Comma-separated. Defined roles: ${[...defined].join(', ')}.`
      : 'Comma-separated. No roles are defined yet (see Roles).' });
  const warning = h('p', { id: `${id}-warning`, class: 'warning small' });
  const errorEl = h('p', { class: 'field-error', role: 'alert' });
  const element = h('div', { class: 'field' },
    h('label', { for: id, text: label }), input, hint, warning, errorEl);

  function value() {
    const seen = new Set();
    return input.value.split(',').map((r) => r.trim()).filter((r) => r && !seen.has(r) && seen.add(r));
  }
  function check() {
    const unknown = value().filter((r) => !defined.has(r));
    warning.textContent = unknown.length
      ? `Not defined: ${unknown.join(', ')}. The gateway refuses roles that are not defined.` : '';
  }
  input.addEventListener('input', check);
  check();
  return { element, input, value, error: (m) => { errorEl.textContent = m || ''; } };
}

/** The permissions of a list as text lines (for tables). */
export function permissionsList(list) {
  if (!list || list.length === 0) return h('span', { class: 'muted', text: 'none' });
  return h('ul', { class: 'plain' },
    list.map((p) => h('li', {}, h('code', { text: p.resource }), ` ${p.operation} (${p.context})`)));
}
