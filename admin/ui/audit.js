// The audit view: the audit log newest first (`GET /api/audit`), with the
// since (a local time in the browser, sent as UTC), actor and target
// filters and `Older`/`Newer` paging by the cursor (a
// stack of the cursors that led to each page). Every field is set with
// textContent: the actor of a failed login is whatever was typed.

import { api, query } from './api.js';
import { h, fill, formatTime } from './dom.js';

const PAGE = 50;

export function auditView(panel) {
  const tbody = h('tbody');
  const error = h('p', { class: 'field-error', role: 'alert' });
  const actor = h('input', { id: 'audit-actor', type: 'search', spellcheck: 'false', autocapitalize: 'none' });
  const target = h('input', { id: 'audit-target', type: 'search', spellcheck: 'false', autocapitalize: 'none' });
  const since = h('input', { id: 'audit-since', type: 'datetime-local', step: '1' });
  const apply = h('button', { type: 'button', text: 'Filter' });
  const newer = h('button', { type: 'button', class: 'secondary', text: 'Newer', disabled: true });
  const older = h('button', { type: 'button', class: 'secondary', text: 'Older', disabled: true });
  const summary = h('p', { class: 'muted small', 'aria-live': 'polite' });
  fill(panel,
    h('h2', { class: 'visually-hidden', text: 'Audit log' }),
    h('div', { class: 'toolbar' },
      h('label', { for: 'audit-since', text: 'Since' }), since,
      h('label', { for: 'audit-actor', text: 'Actor' }), actor,
      h('label', { for: 'audit-target', text: 'Target' }), target,
      apply, newer, older),
    summary, error,
    h('div', { class: 'table-scroll' },
      h('table', { class: 'audit', 'aria-label': 'Audit log' },
        h('thead', {}, h('tr', {}, ['Time', 'Actor', 'Source', 'Action', 'Target', 'Result', 'Pairing ID', 'Detail']
          .map((c) => h('th', { scope: 'col', text: c })))),
        tbody)));

  // cursors[i] is the cursor that gave page i (null for the first).
  let cursors = [null];
  let next = null;

  async function load() {
    const cursor = cursors[cursors.length - 1];
    // A datetime-local value is the browser's local time without a zone;
    // Date reads it as local, toISOString gives the UTC the API wants.
    let from = '';
    if (since.value) {
      const t = new Date(since.value);
      if (Number.isNaN(t.getTime())) {
        error.textContent = 'Since is not a valid date and time.';
        return;
      }
      from = t.toISOString();
    }
    try {
      const page = await api('GET', `/api/audit${query({
        limit: PAGE, since: from, actor: actor.value.trim(), target: target.value.trim(), cursor,
      })}`);
      fill(tbody, page.items.map((r) => h('tr', {},
        h('td', { text: formatTime(r.time) }),
        h('td', { text: r.actor }),
        h('td', { text: r.source ?? '–' }),
        h('td', { text: r.action }),
        h('td', { text: r.target ?? '–' }),
        h('td', { text: r.result }),
        h('td', { text: r.pairingId ?? '–' }),
        h('td', { text: r.error ?? r.detail ?? '' }))));
      next = page.nextCursor;
      older.disabled = !next;
      newer.disabled = cursors.length === 1;
      summary.textContent = page.items.length
        ? `Page ${cursors.length}, ${page.items.length} records, newest first${from ? `, since ${formatTime(from)}` : ''}.`
        : 'No audit records.';
      error.textContent = '';
    } catch (e) {
      if (e.status !== 401) error.textContent = `Cannot read the audit log. ${e.describe()}`;
    }
  }

  apply.addEventListener('click', () => { cursors = [null]; load(); });
  since.addEventListener('change', () => { cursors = [null]; load(); });
  for (const input of [actor, target]) {
    input.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { cursors = [null]; load(); } });
  }
  older.addEventListener('click', () => { if (next) { cursors.push(next); load(); } });
  newer.addEventListener('click', () => { if (cursors.length > 1) { cursors.pop(); load(); } });

  return {
    start() { cursors = [null]; load(); },
    stop() { tbody.replaceChildren(); },
    refresh: load,
  };
}
