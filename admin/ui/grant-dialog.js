// The Grant Access dialog: every detail of one request, its pairing ID
// shown large (the admin compares it with what the device shows), and the
// roles and permissions to grant, pre-filled from what the device asked
// for. A plain grant gives nothing, so "Allow" sends exactly what the admin
// confirms, with the pairing ID: a request replaced meanwhile is refused
// (409) and the dialog says so and shows the new ID. "Deny" denies.

import { api, seg } from './api.js';
import { h, formatTime, permissionText, flash } from './dom.js';
import { permissionsEditor, rolesField } from './permissions.js';

let current = null;

/** Opens the dialog for `item` (a request as the API shows it). */
export async function openGrantDialog(item, { onDone = () => {} } = {}) {
  if (current) current.close();
  let roles = [];
  try { roles = (await api('GET', '/api/roles')).items.map((r) => r.name); } catch { /* the grant reports it */ }
  let request = item;
  try { request = await api('GET', `/api/client-registry/requests/${seg(item.username)}`); } catch { /* show what we had */ }

  const pending = request.state === 'pending';
  const pairing = h('p', { class: 'pairing', id: 'grant-pairing', text: request.pairingId });
  const changed = h('p', { class: 'field-error', role: 'alert' });
  const details = h('dl', { class: 'details' });
  const rolesInput = rolesField(request.roles, roles, { label: 'Roles to grant', id: 'grant-roles' });
  const perms = permissionsEditor(request.permissions, { legend: 'Permissions to grant', idPrefix: 'grant-perm' });
  const errorEl = h('p', { class: 'field-error', role: 'alert' });
  const allow = h('button', { type: 'button', text: 'Allow' });
  const deny = h('button', { type: 'button', class: 'danger', text: 'Deny' });
  const close = h('button', { type: 'button', class: 'secondary', text: 'Close', onclick: () => dialog.close() });
  // A denied request blocks its username for the deny window; forgetting
  // it frees the name at once (DELETE), as the API allows.
  const forget = request.state === 'denied' ? h('button', { type: 'button', class: 'danger', text: 'Forget request' }) : null;
  if (forget) {
    forget.addEventListener('click', async () => {
      clearErrors();
      try {
        await api('DELETE', `/api/client-registry/requests/${seg(request.username)}`);
        flash(`Forgot ${request.username}'s request: the username is free again.`);
        dialog.close();
        onDone();
      } catch (e) { errorEl.textContent = e.describe(); }
    });
  }

  function renderDetails() {
    details.replaceChildren();
    const row = (label, value) => {
      details.append(h('dt', { text: label }), h('dd', {}, value === '' || value === null || value === undefined
        ? h('span', { class: 'muted', text: '—' }) : value));
    };
    row('Username', request.username);
    row('State', request.state);
    row('Transport', request.transport);
    if (request.clientId !== undefined) row('Client ID', request.clientId);
    row('Source address', request.sourceAddr);
    row('First seen', formatTime(request.firstSeen));
    row('Last seen', formatTime(request.lastSeen));
    row('Polls', String(request.polls));
    row('Context', request.context);
    row('Requested roles', request.roles.length ? request.roles.join(', ') : 'none');
    row('Requested permissions', request.permissions.length
      ? h('ul', { class: 'plain' }, request.permissions.map((p) => h('li', { text: permissionText(p) }))) : 'none');
    if (request.grantedAt) row('Granted at', formatTime(request.grantedAt));
    if (request.deniedAt) row('Denied at', formatTime(request.deniedAt));
    pairing.textContent = request.pairingId;
  }

  function clearErrors() {
    errorEl.textContent = '';
    changed.textContent = '';
    rolesInput.error('');
    perms.error('');
  }

  /** Puts an API failure next to what caused it. */
  function showError(e) {
    const rule = e.rule || '';
    if (e.status === 422 && /role/.test(rule)) rolesInput.error(e.describe());
    else if ((e.status === 422 && /permission|resource/.test(rule)) || (e.status === 400 && /permission|resource|operation|context/.test(e.message))) perms.error(e.describe());
    else errorEl.textContent = e.describe();
  }

  /** After a 409: re-reads the request and says what changed. */
  async function explainConflict(e, verb) {
    let now = null;
    try { now = await api('GET', `/api/client-registry/requests/${seg(request.username)}`); } catch { /* gone */ }
    if (now && now.pairingId !== request.pairingId) {
      const before = request.pairingId;
      request = now;
      renderDetails();
      changed.textContent = `Refused: this request changed since you opened it. Its pairing ID was ${before} and is now ${now.pairingId}. ` +
        `Compare the new ID with the device before you ${verb} it.`;
      pairing.classList.add('changed');
    } else {
      if (now) { request = now; renderDetails(); }
      errorEl.textContent = e.describe();
    }
  }

  allow.addEventListener('click', async () => {
    clearErrors();
    let body;
    try {
      body = { roles: rolesInput.value(), permissions: perms.value(), pairingId: request.pairingId };
    } catch (err) { perms.error(err.message); return; }
    allow.disabled = true;
    try {
      await api('POST', `/api/client-registry/requests/${seg(request.username)}/grant`, body);
      flash(`Granted ${request.username}: the device collects its 201 on its next poll.`);
      dialog.close();
      onDone();
    } catch (e) {
      if (e.status === 409) await explainConflict(e, 'allow');
      else if (e.status === 404) errorEl.textContent = 'This request no longer exists: it expired or was forgotten.';
      else showError(e);
    } finally { allow.disabled = false; }
  });

  deny.addEventListener('click', async () => {
    clearErrors();
    deny.disabled = true;
    try {
      await api('POST', `/api/client-registry/requests/${seg(request.username)}/deny`, { pairingId: request.pairingId });
      flash(`Denied ${request.username}.`);
      dialog.close();
      onDone();
    } catch (e) {
      if (e.status === 409) await explainConflict(e, 'deny');
      else if (e.status === 404) errorEl.textContent = 'This request no longer exists: it expired or was forgotten.';
      else showError(e);
    } finally { deny.disabled = false; }
  });

  const dialog = h('dialog', { class: 'grant-dialog', 'aria-labelledby': 'grant-title' },
    h('h2', { id: 'grant-title', text: pending ? 'Grant Access' : 'Request' }),
    h('div', { class: 'pairing-box' },
      h('span', { class: 'pairing-label', id: 'grant-pairing-label', text: 'Pairing ID' }),
      pairing,
      h('span', { class: 'muted small', text: pending ? 'Allow only if the device shows the same ID.' : '' })),
    changed,
    details,
    pending ? h('div', { class: 'grant-edit' },
      h('p', { class: 'muted small', text: 'Pre-filled with what the device requested. The user gets only what you confirm here.' }),
      rolesInput.element, perms.element) : null,
    errorEl,
    h('div', { class: 'dialog-actions' }, close, forget, pending ? deny : null, pending ? allow : null));
  pairing.setAttribute('aria-labelledby', 'grant-pairing-label');
  renderDetails();
  dialog.addEventListener('close', () => { dialog.remove(); if (current === dialog) current = null; });
  document.body.append(dialog);
  current = dialog;
  dialog.showModal();
  (pending ? rolesInput.input : close).focus({ preventScroll: true });
}
