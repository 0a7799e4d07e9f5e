// DOM helpers for the Client Registry View.
//
// Every element of the page that shows data is built here with
// createElement, and every string goes in as a text node (append of a
// string, or textContent). Nothing in the UI assigns HTML strings: the
// Content-Security-Policy's Trusted Types rule would make the browser
// refuse it, so a device-supplied `<img src=x onerror=...>` is only text.

/** Properties set as DOM properties rather than attributes. */
const PROPERTIES = new Set(['value', 'checked', 'disabled', 'hidden', 'selected', 'open']);

/**
 * Builds an element. `props`: `class`, `text` (textContent), `on<event>`
 * functions, DOM properties, anything else as an attribute. Children are
 * nodes or strings (strings become text nodes).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (PROPERTIES.has(key)) el[key] = value;
    else if (value === false) continue;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces every child of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Sets `el`'s text only when it changed (keeps selection and focus). */
export function setText(el, text) {
  const value = text === null || text === undefined ? '' : String(text);
  if (el.textContent !== value) el.textContent = value;
}

const pad = (n) => String(n).padStart(2, '0');

/** An RFC 3339 time as local `YYYY-MM-DD HH:MM:SS`. */
export function formatTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A local `HH:MM:SS` of a Date. */
export function formatClock(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** Milliseconds as `m:ss`, or `h:mm:ss` from an hour up. */
export function formatDuration(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return h > 0 ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}

/** A permission as one line: `plant/# readWrite (mqtt)`. */
export function permissionText(p) {
  return `${p.resource} ${p.operation} (${p.context})`;
}

/**
 * A modal confirmation. Resolves true when `confirmLabel` is pressed,
 * false on "Cancel" or Escape.
 */
export function confirmDialog(title, message, confirmLabel) {
  return new Promise((resolve) => {
    let answer = false;
    const ok = h('button', { type: 'button', class: 'danger', text: confirmLabel,
      onclick: () => { answer = true; dialog.close(); } });
    const cancel = h('button', { type: 'button', class: 'secondary', text: 'Cancel',
      onclick: () => dialog.close() });
    const titleId = `confirm-title-${Math.random().toString(36).slice(2)}`;
    const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': titleId },
      h('h2', { id: titleId, text: title }),
      h('p', { text: message }),
      h('div', { class: 'dialog-actions' }, cancel, ok));
    dialog.addEventListener('close', () => { dialog.remove(); resolve(answer); });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** Shows a short message in the page's status line. */
export function flash(message, kind = 'ok') {
  const el = document.getElementById('flash');
  el.className = `flash ${kind}`;
  el.textContent = message;
}
