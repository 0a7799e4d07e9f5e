// The requests view: the table of pending, granted (collected or not) or
// denied requests, its filters and cursor paging, and the bulk actions fed
// by its checkboxes.
//
// The table shows one page of `GET /api/client-registry/requests?state=...`
// at a time (it never loads everything, so it stays usable with 1,000,000
// pending; each state is its own index in the store, so a page of denied
// requests is as cheap as a page of pending ones) and re-reads that page
// every second, so new requests appear
// within 2 s. Rows are kept by username and updated in place, so focus and
// checkboxes survive a refresh. The selection is a set of usernames that
// outlives paging; "Grant selected" and "Deny selected" send it to the
// bulk routes, and "Grant all matching" sends the prefix filter as a
// selector, following `nextCursor` until every match is decided.

import { api, query, seg, BULK_TIMEOUT_MS } from './api.js';
import { h, fill, setText, formatTime, permissionText, confirmDialog } from './dom.js';
import { openGrantDialog } from './grant-dialog.js';
import { permissionsEditor, rolesField } from './permissions.js';

/** How often the shown page is re-read (ms). */
const REFRESH_MS = 1000;
/** The bulk routes' cap on names per call. */
const BULK_MAX = 10000;

const COLUMNS = ['Username', 'Pairing ID', 'Transport', 'Source address', 'First seen',
  'Last seen', 'Polls', 'Requested roles and permissions', 'Context'];

export function requestsView(panel, registry) {
  const view = {
    state: 'pending',
    prefix: '',
    limit: 100,
    cursors: [null],   // cursors[i] opens page i
    page: 0,
    nextCursor: null,
    items: [],
    rows: new Map(),   // username -> { tr, cells, checkbox }
    selected: new Map(), // username -> item as last seen
    timer: null,
    loading: false,
    generation: 0,
  };

  // ---- controls ----
  const prefixInput = h('input', { id: 'requests-prefix', type: 'search', spellcheck: 'false',
    autocapitalize: 'none', placeholder: 'e.g. sensor-' });
  const stateSelect = h('select', { id: 'requests-state' },
    h('option', { value: 'pending', text: 'Pending' }),
    h('option', { value: 'granted', text: 'Granted (collected or not)' }),
    h('option', { value: 'denied', text: 'Denied' }));
  const limitSelect = h('select', { id: 'requests-limit' },
    [25, 50, 100, 500].map((n) => h('option', { value: n, text: String(n), selected: n === 100 })));
  const prevButton = h('button', { type: 'button', class: 'secondary', text: 'Previous page' });
  const nextButton = h('button', { type: 'button', class: 'secondary', text: 'Next page' });
  const pageInfo = h('span', { class: 'muted', 'aria-live': 'polite' });
  const selectAll = h('input', { type: 'checkbox', 'aria-label': 'Select all on this page' });
  const selectedInfo = h('span', { class: 'muted', 'aria-live': 'polite' });
  const grantSelected = h('button', { type: 'button', text: 'Grant selected' });
  const denySelected = h('button', { type: 'button', class: 'danger', text: 'Deny selected' });
  const grantMatching = h('button', { type: 'button', class: 'secondary', text: 'Grant all matching' });
  const clearSelection = h('button', { type: 'button', class: 'secondary', text: 'Clear selection' });
  const bulkError = h('p', { class: 'field-error', role: 'alert' });
  const bulkResult = h('p', { class: 'bulk-result', role: 'status' });
  const tableError = h('p', { class: 'field-error', role: 'alert' });
  const emptyNote = h('p', { class: 'empty muted' });
  const tbody = h('tbody');
  const headRow = h('tr', {}, h('th', { class: 'select' }, selectAll),
    COLUMNS.map((c) => h('th', { scope: 'col', text: c })));
  // The time of the decision, for granted and denied listings.
  const decidedHead = h('th', { scope: 'col', class: 'decided-at' });
  const table = h('table', { class: 'requests', 'aria-label': 'Requests' },
    h('thead', {}, headRow), tbody);

  fill(panel,
    h('h2', { class: 'visually-hidden', text: 'Requests' }),
    h('div', { class: 'toolbar' },
      h('div', { class: 'field inline' }, h('label', { for: 'requests-prefix', text: 'Username prefix' }), prefixInput),
      h('div', { class: 'field inline' }, h('label', { for: 'requests-state', text: 'State' }), stateSelect),
      h('div', { class: 'field inline' }, h('label', { for: 'requests-limit', text: 'Rows per page' }), limitSelect)),
    h('div', { class: 'toolbar bulk', role: 'group', 'aria-label': 'Bulk actions' },
      selectedInfo, grantSelected, denySelected, clearSelection, grantMatching),
    bulkError, bulkResult, tableError,
    h('div', { class: 'table-scroll' }, table),
    emptyNote,
    h('div', { class: 'toolbar pager' }, prevButton, pageInfo, nextButton));

  // ---- loading ----
  async function load() {
    if (view.loading) return;
    view.loading = true;
    const generation = view.generation;
    try {
      const page = await api('GET', `/api/client-registry/requests${query({
        state: view.state, limit: view.limit, prefix: view.prefix, cursor: view.cursors[view.page],
      })}`);
      if (generation !== view.generation) return; // filters changed meanwhile
      view.items = page.items;
      view.nextCursor = page.nextCursor || null;
      tableError.textContent = '';
      render();
    } catch (e) {
      if (e.status !== 401) tableError.textContent = `Cannot list the requests. ${e.describe()}`;
    } finally {
      view.loading = false;
    }
  }

  function restart() {
    view.generation += 1;
    view.loading = false;
    view.cursors = [null];
    view.page = 0;
    view.items = [];
    render();
    load();
  }

  // ---- rendering ----
  function buildRow(item) {
    const checkbox = h('input', { type: 'checkbox', 'aria-label': `Select ${item.username}` });
    checkbox.addEventListener('change', () => {
      const current = view.rows.get(item.username).item;
      if (checkbox.checked) view.selected.set(current.username, current);
      else view.selected.delete(current.username);
      renderSelection();
    });
    const open = h('button', { type: 'button', class: 'link' });
    const cells = {
      username: open,
      pairing: h('code', { class: 'pairing-small' }),
      transport: h('span'),
      clientId: h('span', { class: 'muted small block' }),
      source: h('span'),
      firstSeen: h('time'),
      lastSeen: h('time'),
      polls: h('span'),
      wish: h('div', { class: 'wish' }),
      context: h('span', { class: 'context-text' }),
      decidedAt: h('time'),
    };
    const tr = h('tr', {},
      h('td', { class: 'select' }, checkbox),
      h('td', {}, cells.username),
      h('td', {}, cells.pairing),
      h('td', {}, cells.transport, cells.clientId),
      h('td', {}, cells.source),
      h('td', {}, cells.firstSeen),
      h('td', {}, cells.lastSeen),
      h('td', { class: 'num' }, cells.polls),
      h('td', {}, cells.wish),
      h('td', {}, cells.context),
      h('td', { class: 'decided-at' }, cells.decidedAt));
    const row = { tr, cells, checkbox, item, wishKey: null };
    open.addEventListener('click', () => openRequest(row.item));
    tr.addEventListener('click', (ev) => {
      if (ev.target.closest('input, button, a')) return;
      openRequest(row.item);
    });
    return row;
  }

  function updateRow(row, item) {
    row.item = item;
    const c = row.cells;
    setText(c.username, item.username);
    c.username.setAttribute('aria-label', `Open request ${item.username}`);
    setText(c.pairing, item.pairingId);
    setText(c.transport, item.transport);
    setText(c.clientId, item.clientId ? `client id: ${item.clientId}` : '');
    setText(c.source, item.sourceAddr || '');
    setText(c.firstSeen, formatTime(item.firstSeen));
    c.firstSeen.dateTime = item.firstSeen;
    setText(c.lastSeen, formatTime(item.lastSeen));
    c.lastSeen.dateTime = item.lastSeen;
    setText(c.polls, item.polls);
    const wishKey = JSON.stringify([item.roles, item.permissions]);
    if (wishKey !== row.wishKey) {
      row.wishKey = wishKey;
      const lines = [
        ...item.roles.map((r) => h('li', {}, h('span', { class: 'tag', text: r }))),
        ...item.permissions.map((p) => h('li', { text: permissionText(p) })),
      ];
      fill(c.wish, lines.length ? h('ul', { class: 'plain' }, lines) : h('span', { class: 'muted', text: 'nothing' }));
    }
    setText(c.context, item.context === null || item.context === undefined ? '' : item.context);
    const decidedAt = item.grantedAt || item.deniedAt;
    setText(c.decidedAt, decidedAt ? formatTime(decidedAt) : '');
    if (decidedAt) c.decidedAt.dateTime = decidedAt;
    row.checkbox.checked = view.selected.has(item.username);
    row.checkbox.hidden = view.state !== 'pending';
    if (view.selected.has(item.username)) view.selected.set(item.username, item);
  }

  function render() {
    const pending = view.state === 'pending';
    table.classList.toggle('show-decided', !pending);
    setText(decidedHead, view.state === 'denied' ? 'Denied at' : 'Granted at');
    if (!pending && !decidedHead.isConnected) headRow.append(decidedHead);
    if (pending && decidedHead.isConnected) decidedHead.remove();
    selectAll.hidden = !pending;
    const seen = new Set();
    let previous = null;
    for (const item of view.items) {
      seen.add(item.username);
      let row = view.rows.get(item.username);
      if (!row) {
        row = buildRow(item);
        view.rows.set(item.username, row);
      }
      updateRow(row, item);
      // Only move a row that is out of place (moving blurs a focused row).
      const expected = previous ? previous.nextSibling : tbody.firstChild;
      if (expected !== row.tr) tbody.insertBefore(row.tr, expected);
      previous = row.tr;
    }
    for (const [username, row] of view.rows) {
      if (!seen.has(username)) { row.tr.remove(); view.rows.delete(username); }
    }
    const from = view.page * view.limit;
    pageInfo.textContent = view.items.length
      ? `Page ${view.page + 1} · rows ${from + 1}–${from + view.items.length}` : `Page ${view.page + 1}`;
    prevButton.disabled = view.page === 0;
    nextButton.disabled = !view.nextCursor;
    if (view.items.length) emptyNote.textContent = '';
    else if (view.prefix) emptyNote.textContent = `No ${view.state} requests whose username starts with “${view.prefix}”.`;
    else if (pending && registry.locked) emptyNote.textContent = 'No pending requests. The registry is locked: new devices are refused until you unlock it.';
    else emptyNote.textContent = `No ${view.state} requests.`;
    renderSelection();
  }

  function renderSelection() {
    const n = view.selected.size;
    const pending = view.state === 'pending';
    selectedInfo.textContent = `${n} selected`;
    grantSelected.disabled = !pending || n === 0;
    denySelected.disabled = !pending || n === 0;
    clearSelection.disabled = n === 0;
    grantMatching.disabled = !pending;
    const onPage = view.items.filter((i) => view.selected.has(i.username)).length;
    selectAll.checked = view.items.length > 0 && onPage === view.items.length;
    selectAll.indeterminate = onPage > 0 && onPage < view.items.length;
  }

  function openRequest(item) {
    openGrantDialog(item, { onDone: () => { view.selected.delete(item.username); load(); } });
  }

  // ---- bulk actions ----
  async function bulk(route, body) {
    return api('POST', `/api/client-registry/requests/${route}`, body, { timeoutMs: BULK_TIMEOUT_MS });
  }

  function summarize(verb, counts, failures) {
    bulkResult.classList.toggle('warn', failures.length > 0);
    const parts = Object.entries(counts).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k.replace('_', ' ')}`);
    let text = `${verb}: ${parts.join(', ') || 'nothing to do'}.`;
    if (failures.length) {
      const shown = failures.slice(0, 10).map((f) => `${f.username} (${f.result.replace('_', ' ')})`).join(', ');
      text += ` Not ${verb.toLowerCase()}: ${shown}${failures.length > 10 ? `, and ${failures.length - 10} more` : ''}.`;
    }
    return text;
  }

  /** Runs a bulk call over `usernames` in chunks; returns the item results. */
  async function bulkByName(route, usernames, extra) {
    const items = [];
    for (let i = 0; i < usernames.length; i += BULK_MAX) {
      const answer = await bulk(route, { usernames: usernames.slice(i, i + BULK_MAX), ...extra });
      items.push(...answer.items);
    }
    return items;
  }

  function tally(items, ok) {
    const counts = {};
    const failures = [];
    for (const item of items) {
      counts[item.result] = (counts[item.result] || 0) + 1;
      if (!ok.includes(item.result)) failures.push(item);
    }
    return { counts, failures };
  }

  /** The dialog asking what a bulk grant gives; resolves to overrides or null. */
  async function grantOptions(title, description, sample, { withTransport = false } = {}) {
    let roles = [];
    try { roles = (await api('GET', '/api/roles')).items.map((r) => r.name); } catch { /* shown on submit */ }
    // Pre-fill with the device's wish when every request asked for the same.
    const keys = new Set(sample.map((i) => JSON.stringify([[...i.roles].sort(), i.permissions])));
    const same = sample.length > 0 && keys.size === 1;
    const rolesInput = rolesField(same ? sample[0].roles : [], roles, { label: 'Roles to grant', id: 'bulk-roles' });
    const perms = permissionsEditor(same ? sample[0].permissions : [], { legend: 'Permissions to grant' });
    const errorEl = h('p', { class: 'field-error', role: 'alert' });
    const transport = withTransport ? h('select', { id: 'bulk-transport' },
      h('option', { value: '', text: 'any' }), h('option', { value: 'http', text: 'http' }),
      h('option', { value: 'mqtt', text: 'mqtt' })) : null;
    return new Promise((resolve) => {
      let result = null;
      const titleId = 'bulk-title';
      const submit = h('button', { type: 'button', text: 'Grant' });
      const cancel = h('button', { type: 'button', class: 'secondary', text: 'Cancel', onclick: () => dialog.close() });
      const dialog = h('dialog', { class: 'bulk-dialog', 'aria-labelledby': titleId },
        h('h2', { id: titleId, text: title }),
        h('p', { text: description }),
        h('p', { class: 'muted small', text: same
          ? 'Pre-filled with what these devices requested. A grant gives only what you confirm here.'
          : 'These devices requested different things, so nothing is pre-filled. A grant gives only what you confirm here.' }),
        transport ? h('div', { class: 'field' }, h('label', { for: 'bulk-transport', text: 'Only requests that came over' }), transport) : null,
        rolesInput.element, perms.element, errorEl,
        h('div', { class: 'dialog-actions' }, cancel, submit));
      submit.addEventListener('click', () => {
        try {
          result = { roles: rolesInput.value(), permissions: perms.value(), transport: transport ? transport.value : '' };
        } catch (e) { errorEl.textContent = e.message; return; }
        dialog.close();
      });
      dialog.addEventListener('close', () => { dialog.remove(); resolve(result); });
      document.body.append(dialog);
      dialog.showModal();
      rolesInput.input.focus();
    });
  }

  function bulkFailed(e) {
    bulkError.textContent = e.describe();
  }

  grantSelected.addEventListener('click', async () => {
    bulkError.textContent = ''; bulkResult.textContent = '';
    const usernames = [...view.selected.keys()];
    const overrides = await grantOptions(`Grant ${usernames.length} selected request${usernames.length === 1 ? '' : 's'}`,
      `Creates a user for each of: ${usernames.slice(0, 5).join(', ')}${usernames.length > 5 ? ` and ${usernames.length - 5} more` : ''}.`,
      [...view.selected.values()]);
    if (!overrides) return;
    grantSelected.disabled = true;
    try {
      const items = await bulkByName('grant', usernames, { roles: overrides.roles, permissions: overrides.permissions });
      const { counts, failures } = tally(items, ['granted', 'already_granted']);
      for (const item of items) if (item.result !== 'conflict') view.selected.delete(item.username);
      bulkResult.textContent = summarize('Granted', counts, failures);
    } catch (e) { bulkFailed(e); }
    renderSelection();
    load();
  });

  denySelected.addEventListener('click', async () => {
    bulkError.textContent = ''; bulkResult.textContent = '';
    const usernames = [...view.selected.keys()];
    const ok = await confirmDialog(`Deny ${usernames.length} request${usernames.length === 1 ? '' : 's'}?`,
      `These devices get 403 on their next poll and cannot register again for a while: ${usernames.slice(0, 5).join(', ')}${usernames.length > 5 ? ` and ${usernames.length - 5} more` : ''}.`,
      'Deny requests');
    if (!ok) return;
    try {
      const items = await bulkByName('deny', usernames, {});
      const { counts, failures } = tally(items, ['denied', 'already_denied']);
      for (const item of items) if (item.result !== 'conflict') view.selected.delete(item.username);
      bulkResult.textContent = summarize('Denied', counts, failures);
    } catch (e) { bulkFailed(e); }
    renderSelection();
    load();
  });

  grantMatching.addEventListener('click', async () => {
    if (syncPrefix()) restart();
    bulkError.textContent = ''; bulkResult.textContent = '';
    const prefix = view.prefix;
    const what = prefix ? `every pending request whose username starts with “${prefix}”`
      : 'every pending request';
    const overrides = await grantOptions('Grant all matching requests',
      `Grants ${what}, page by page, including requests not shown on this page.`, view.items,
      { withTransport: true });
    if (!overrides) return;
    const { transport, ...grant } = overrides;
    const selector = { ...(prefix ? { prefix } : {}), ...(transport ? { transport } : {}) };
    const counts = {};
    const failures = [];
    let cursor = null;
    try {
      do {
        // `nextCursor` goes back as `cursor`, beside the selector (issue 14).
        const answer = await bulk('grant', { selector, limit: BULK_MAX, ...(cursor ? { cursor } : {}), ...grant });
        const t = tally(answer.items, ['granted', 'already_granted']);
        for (const [k, n] of Object.entries(t.counts)) counts[k] = (counts[k] || 0) + n;
        failures.push(...t.failures);
        cursor = answer.nextCursor || null;
        bulkResult.textContent = `Granting ${what}… ${counts.granted || 0} granted so far.`;
      } while (cursor);
      bulkResult.textContent = summarize('Granted', counts, failures);
    } catch (e) { bulkFailed(e); }
    load();
  });

  clearSelection.addEventListener('click', () => {
    view.selected.clear();
    for (const row of view.rows.values()) row.checkbox.checked = false;
    renderSelection();
  });

  selectAll.addEventListener('change', () => {
    for (const row of view.rows.values()) {
      row.checkbox.checked = selectAll.checked;
      if (selectAll.checked) view.selected.set(row.item.username, row.item);
      else view.selected.delete(row.item.username);
    }
    renderSelection();
  });

  // ---- filters and paging ----
  // Typing in the prefix field waits 250 ms before listing; any other
  // control applies a prefix still waiting first, so nothing acts on a
  // stale filter.
  let prefixTimer = null;
  function syncPrefix() {
    clearTimeout(prefixTimer);
    const prefix = prefixInput.value.trim();
    if (prefix === view.prefix) return false;
    view.prefix = prefix;
    return true;
  }
  prefixInput.addEventListener('input', () => {
    clearTimeout(prefixTimer);
    prefixTimer = setTimeout(() => { if (syncPrefix()) restart(); }, 250);
  });
  prefixInput.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && syncPrefix()) restart(); });
  stateSelect.addEventListener('change', () => {
    syncPrefix();
    view.state = stateSelect.value;
    view.selected.clear();
    restart();
  });
  limitSelect.addEventListener('change', () => { syncPrefix(); view.limit = Number(limitSelect.value); restart(); });
  nextButton.addEventListener('click', () => {
    if (syncPrefix()) { restart(); return; }
    if (!view.nextCursor) return;
    view.cursors[view.page + 1] = view.nextCursor;
    view.page += 1;
    view.generation += 1;
    view.loading = false;
    load();
  });
  prevButton.addEventListener('click', () => {
    if (syncPrefix()) { restart(); return; }
    if (view.page === 0) return;
    view.page -= 1;
    view.generation += 1;
    view.loading = false;
    load();
  });
  registry.onChange(() => render());

  return {
    start() {
      this.stop();
      load();
      view.timer = setInterval(() => { if (!panel.hidden) load(); }, REFRESH_MS);
    },
    stop() {
      clearInterval(view.timer);
      view.timer = null;
      view.selected.clear();
      view.items = [];
      view.generation += 1;
      view.loading = false;
      render();
      bulkResult.textContent = '';
      bulkError.textContent = '';
    },
    refresh: load,
    /** Opens a request by name (used after a reload with a hash). */
    async open(username) {
      try { openRequest(await api('GET', `/api/client-registry/requests/${seg(username)}`)); } catch (e) { tableError.textContent = e.describe(); }
    },
  };
}
