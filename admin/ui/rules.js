// The rules view: the auto-approval rules in evaluation order
// (`GET /api/client-registry/rules`, at most 1,000, so one answer), with
// each rule's use counter, "Move up"/"Move down" (`PUT .../rules/order`
// with the whole new order), and a dialog to create or edit a rule
// (`PUT .../rules/{name}`) and to delete it after a confirmation. The
// API's 422s are shown in words in the dialog. Every field is set with
// textContent: a pattern or a role name is only ever text.

import { api, seg } from './api.js';
import { h, fill, confirmDialog, flash, formatTime } from './dom.js';
import { permissionsEditor, permissionsList } from './permissions.js';

const BASE = '/api/client-registry/rules';

/** A rule's matching conditions, as one line of text. */
function conditions(r) {
  const parts = [];
  parts.push(r.usernamePattern ? `username ~ ${r.usernamePattern}` : 'any username');
  if (r.sourceCidrs && r.sourceCidrs.length) parts.push(`from ${r.sourceCidrs.join(', ')}`);
  if (r.transport) parts.push(`over ${r.transport}`);
  if (r.requireCsr) parts.push('with a CSR');
  if (r.whileLocked) parts.push('also while locked');
  return parts.join('; ');
}

export function rulesView(panel) {
  const tbody = h('tbody');
  const error = h('p', { class: 'field-error', role: 'alert' });
  const create = h('button', { type: 'button', text: 'New rule', onclick: () => openRule(null) });
  fill(panel,
    h('h2', { class: 'visually-hidden', text: 'Rules' }),
    h('div', { class: 'toolbar' }, create,
      h('p', { class: 'muted small', text: 'The first rule that matches a new request decides it, when the request is created. A granting rule gives only the roles and permissions listed here.' })),
    error,
    h('div', { class: 'table-scroll' },
      h('table', { class: 'rules', 'aria-label': 'Rules' },
        h('thead', {}, h('tr', {}, ['#', 'Name', 'Matches', 'Action', 'Gives', 'Uses', 'Expires', '']
          .map((c) => h('th', { scope: 'col', text: c })))),
        tbody)));

  let rules = [];

  async function load() {
    try {
      ({ items: rules } = await api('GET', BASE));
      fill(tbody, rules.map((r, i) => h('tr', {},
        h('td', { text: String(i + 1) }),
        h('td', {}, h('button', { type: 'button', class: 'link', text: r.name, 'aria-label': `Edit rule ${r.name}`, onclick: () => openRule(r) })),
        h('td', { text: conditions(r) }),
        h('td', { text: r.action }),
        h('td', {}, r.action === 'grant'
          ? [h('div', { text: r.roles && r.roles.length ? `roles: ${r.roles.join(', ')}` : 'no roles' }),
            h('div', {}, 'permissions: ', permissionsList(r.permissions))]
          : '–'),
        h('td', { text: r.maxUses ? `${r.uses} of ${r.maxUses}` : `${r.uses}` }),
        h('td', { text: r.expiresAt ? formatTime(r.expiresAt) : 'never' }),
        h('td', {},
          h('button', { type: 'button', class: 'secondary small', text: 'Up', 'aria-label': `Move ${r.name} up`, disabled: i === 0, onclick: () => move(i, -1) }),
          h('button', { type: 'button', class: 'secondary small', text: 'Down', 'aria-label': `Move ${r.name} down`, disabled: i === rules.length - 1, onclick: () => move(i, 1) })))));
      if (!rules.length) fill(tbody, h('tr', {}, h('td', { colspan: 8, class: 'muted', text: 'No rules: every request waits for an admin.' })));
      error.textContent = '';
    } catch (e) {
      if (e.status !== 401) error.textContent = `Cannot list the rules. ${e.describe()}`;
    }
  }

  async function move(i, by) {
    const names = rules.map((r) => r.name);
    const [name] = names.splice(i, 1);
    names.splice(i + by, 0, name);
    try {
      await api('PUT', `${BASE}/order`, { names });
      flash(`Moved rule ${name} ${by < 0 ? 'up' : 'down'}.`);
    } catch (e) {
      error.textContent = `Cannot reorder the rules. ${e.describe()}`;
    }
    load();
  }

  function openRule(rule) {
    const isNew = rule === null;
    const r = rule || {};
    const field = (id, label, input, hint) => h('div', { class: 'field' },
      h('label', { for: id, text: label }), input, hint ? h('p', { class: 'muted small', text: hint }) : null);
    const name = h('input', { id: 'rule-name', type: 'text', value: r.name || '', readonly: !isNew, spellcheck: 'false', autocapitalize: 'none' });
    const pattern = h('input', { id: 'rule-pattern', type: 'text', value: r.usernamePattern || '', spellcheck: 'false', autocapitalize: 'none', placeholder: 'plant4-[0-9]+' });
    const cidrs = h('textarea', { id: 'rule-cidrs', rows: 3, spellcheck: 'false', value: (r.sourceCidrs || []).join('\n') });
    const transport = h('select', { id: 'rule-transport' },
      [['', 'HTTP or MQTT'], ['http', 'HTTP only'], ['mqtt', 'MQTT only']]
        .map(([v, t]) => h('option', { value: v, text: t, selected: (r.transport || '') === v })));
    const requireCsr = h('input', { id: 'rule-csr', type: 'checkbox', checked: !!r.requireCsr });
    const action = h('select', { id: 'rule-action' },
      ['grant', 'deny'].map((a) => h('option', { value: a, text: a, selected: (r.action || 'grant') === a })));
    const roles = h('input', { id: 'rule-roles', type: 'text', value: (r.roles || []).join(', '), spellcheck: 'false', autocapitalize: 'none' });
    const perms = permissionsEditor(r.permissions || [], { legend: 'Permissions the rule gives', idPrefix: 'rule-perm' });
    const maxUses = h('input', { id: 'rule-max-uses', type: 'number', min: 1, value: r.maxUses ?? '' });
    const expiresAt = h('input', { id: 'rule-expires', type: 'text', value: r.expiresAt || '', spellcheck: 'false', placeholder: '2027-01-01T00:00:00Z' });
    const whileLocked = h('input', { id: 'rule-while-locked', type: 'checkbox', checked: !!r.whileLocked });
    const errorEl = h('p', { class: 'field-error', role: 'alert' });
    const save = h('button', { type: 'button', text: 'Save rule' });
    const del = isNew ? null : h('button', { type: 'button', class: 'danger', text: 'Delete rule' });
    const close = h('button', { type: 'button', class: 'secondary', text: 'Close', onclick: () => dialog.close() });
    const grantOnly = h('div', {}, field('rule-roles', 'Roles', roles, 'Defined roles, separated by commas.'), perms.element);
    const showGrantFields = () => { grantOnly.hidden = action.value !== 'grant'; };
    action.addEventListener('change', showGrantFields);
    showGrantFields();
    const dialog = h('dialog', { class: 'rule-dialog', 'aria-labelledby': 'rule-title' },
      h('h2', { id: 'rule-title', text: isNew ? 'New rule' : `Rule ${r.name}` }),
      field('rule-name', 'Rule name', name, '1 to 64 characters from A–Z a–z 0–9 . _ : -'),
      field('rule-pattern', 'Username pattern', pattern, 'A regex the whole username must match; empty: any username.'),
      field('rule-cidrs', 'Source networks', cidrs, 'One IPv4 or IPv6 network a line; empty: any source.'),
      field('rule-transport', 'Transport', transport),
      h('div', { class: 'field checkbox' }, requireCsr, h('label', { for: 'rule-csr', text: 'Only devices that send a CSR' })),
      field('rule-action', 'Action', action),
      grantOnly,
      field('rule-max-uses', 'Most uses', maxUses, r.uses !== undefined ? `Used ${r.uses} times. Empty: no limit.` : 'Empty: no limit.'),
      field('rule-expires', 'Expires at', expiresAt, 'RFC 3339 in UTC; empty: never.'),
      h('div', { class: 'field checkbox' }, whileLocked, h('label', { for: 'rule-while-locked', text: 'Also decide while the registry is locked' })),
      errorEl,
      h('div', { class: 'dialog-actions' }, close, del, save));

    save.addEventListener('click', async () => {
      errorEl.textContent = ''; perms.error('');
      const ruleName = name.value.trim();
      if (!ruleName) { errorEl.textContent = 'A rule needs a name.'; name.focus(); return; }
      const body = { action: action.value };
      if (pattern.value.trim()) body.usernamePattern = pattern.value.trim();
      const nets = cidrs.value.split('\n').map((s) => s.trim()).filter(Boolean);
      if (nets.length) body.sourceCidrs = nets;
      if (transport.value) body.transport = transport.value;
      if (requireCsr.checked) body.requireCsr = true;
      if (action.value === 'grant') {
        const roleNames = roles.value.split(',').map((s) => s.trim()).filter(Boolean);
        if (roleNames.length) body.roles = roleNames;
        try {
          const p = perms.value();
          if (p.length) body.permissions = p;
        } catch (e) { perms.error(e.message); return; }
      }
      if (maxUses.value.trim()) {
        const n = Number(maxUses.value);
        if (!Number.isInteger(n) || n < 1) { errorEl.textContent = 'Most uses must be a whole number of at least 1, or empty.'; maxUses.focus(); return; }
        body.maxUses = n;
      }
      if (expiresAt.value.trim()) body.expiresAt = expiresAt.value.trim();
      if (whileLocked.checked) body.whileLocked = true;
      try {
        await api('PUT', `${BASE}/${seg(ruleName)}`, body);
        flash(`Saved rule ${ruleName}.`);
        dialog.close();
        load();
      } catch (e) {
        errorEl.textContent = e.describe();
      }
    });
    if (del) {
      del.addEventListener('click', async () => {
        const ok = await confirmDialog(`Delete rule ${r.name}?`,
          'Requests it already decided stay decided. New requests it would have matched go to the next rule, or wait for an admin.', 'Delete');
        if (!ok) return;
        try {
          await api('DELETE', `${BASE}/${seg(r.name)}`);
          flash(`Deleted rule ${r.name}.`);
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
