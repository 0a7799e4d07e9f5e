// The registry state bar: "Locked", or "Unlocked" with a live countdown to
// the relock, the pending count, and the Unlock (with a duration) and Lock
// buttons.
//
// The state is read from `GET /api/client-registry` every second, so the
// bar follows changes made by another admin or the CLI; the countdown is
// redrawn four times a second from `unlockedUntil` on the server's clock.

import { api, serverNow } from './api.js';
import { formatDuration, setText } from './dom.js';

/** How often the state is re-read (ms). */
const POLL_MS = 1000;

export function registryState() {
  const badge = document.getElementById('state-badge');
  const countdown = document.getElementById('state-countdown');
  const pending = document.getElementById('state-pending');
  const error = document.getElementById('state-error');
  const unlockButton = document.getElementById('unlock');
  const lockButton = document.getElementById('lock');
  const duration = document.getElementById('unlock-duration');
  let state = null;
  let timers = [];
  let listeners = [];

  function render() {
    if (!state) return;
    const until = state.unlockedUntil ? Date.parse(state.unlockedUntil) : null;
    const left = until === null ? 0 : until - serverNow();
    const unlocked = !state.locked && left > 0;
    setText(badge, unlocked ? 'Unlocked' : 'Locked');
    badge.className = `badge ${unlocked ? 'unlocked' : 'locked'}`;
    setText(countdown, unlocked ? `relocks in ${formatDuration(left)}` : 'new devices are refused');
    countdown.title = unlocked ? `at ${new Date(until).toLocaleTimeString()}` : '';
    setText(pending, `${state.pending} pending`);
    lockButton.disabled = !unlocked;
    const before = unlocked;
    if (before !== render.unlocked) {
      render.unlocked = before;
      listeners.forEach((fn) => fn(state));
    }
  }

  async function refresh() {
    try {
      state = await api('GET', '/api/client-registry');
      error.textContent = '';
    } catch (e) {
      if (e.status !== 401) error.textContent = `Cannot read the registry state. ${e.describe()}`;
    }
    render();
  }

  async function change(path, body) {
    error.textContent = '';
    try {
      state = await api('POST', path, body);
      render();
    } catch (e) {
      error.textContent = e.describe();
    }
  }

  unlockButton.addEventListener('click', () =>
    change('/api/client-registry/unlock', { durationMs: Number(duration.value) }));
  lockButton.addEventListener('click', () => change('/api/client-registry/lock'));

  return {
    start() {
      this.stop();
      refresh();
      timers = [setInterval(refresh, POLL_MS), setInterval(render, 250)];
    },
    stop() {
      timers.forEach(clearInterval);
      timers = [];
      state = null;
      render.unlocked = undefined;
      badge.textContent = '…';
      countdown.textContent = '';
      pending.textContent = '';
      error.textContent = '';
    },
    /** `fn(state)` runs whenever the registry locks or unlocks. */
    onChange(fn) { listeners.push(fn); },
    get locked() { return !state || state.locked; },
  };
}
