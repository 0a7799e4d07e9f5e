//! Filling the embedded store with pending requests, and re-polling them.
//!
//! The store bench and the memory example both need many distinct devices.
//! A device's name is written into a stack buffer ([`DeviceName`]), so the
//! benches read no name table: a million-entry `Vec<String>` would add two
//! cache misses per poll that a real poll (whose username sits in the hot
//! receive buffer) does not have, and would blur the 1k-vs-1M comparison.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll as TaskPoll, Waker};
use std::time::Duration;

use fleetgate_registry::decision::{LockState, Windows};
use fleetgate_registry::embedded::EmbeddedStore;
use fleetgate_registry::fingerprint::Fingerprint;
use fleetgate_registry::model::Transport;
use fleetgate_registry::store::{Poll, SealOnCreate, Store};
use fleetgate_registry::UnixMillis;

/// Length of a sealed 12-byte password: the credential-kind tag byte, the
/// plaintext, and the 16-byte Poly1305 tag (the nonce is derived from the
/// fingerprint, not stored).
pub const SEALED_LEN: usize = 1 + 12 + 16;

/// Devices are numbered below this; [`DeviceName`] has six digits.
pub const MAX_DEVICES: u32 = 1_000_000;

/// `device-000123`: the name of one device, on the stack.
#[derive(Clone, Copy)]
pub struct DeviceName([u8; 13]);

impl DeviceName {
    /// The name of device `i`. Panics unless `i < MAX_DEVICES`.
    pub fn new(i: u32) -> Self {
        assert!(i < MAX_DEVICES, "device {i} needs more than six digits");
        let mut b = *b"device-000000";
        let mut n = i;
        for slot in b[7..].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        DeviceName(b)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters, '-' and digits are ever written.
        std::str::from_utf8(&self.0).expect("ASCII")
    }
}

/// A 64-bit xorshift generator: a few instructions per number, so picking a
/// random device costs next to nothing next to the poll it drives.
#[derive(Clone, Debug)]
pub struct XorShift64(u64);

impl XorShift64 {
    pub fn new(seed: u64) -> Self {
        XorShift64(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n` (the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % u64::from(n)) as u32
    }

    /// `0..n` in a random order: the order devices first show up in.
    pub fn permutation(&mut self, n: u32) -> Vec<u32> {
        let mut v: Vec<u32> = (0..n).collect();
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
        v
    }
}

/// Runs a future that must complete without suspending: the embedded store
/// never waits on I/O, so a `Pending` here is a bug (the same helper as
/// `registry/src/embedded/tests.rs`).
pub fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        TaskPoll::Ready(v) => v,
        TaskPoll::Pending => panic!("the embedded store suspended"),
    }
}

/// An in-memory embedded store, unlocked for an hour from `now`, with room
/// for `max_pending` pending requests.
pub fn unlocked_store(max_pending: usize, now: UnixMillis) -> EmbeddedStore {
    let store = EmbeddedStore::in_memory(Windows::default(), max_pending);
    now_or_never(store.set_lock_state(LockState {
        unlocked_until: Some(now.plus(Duration::from_secs(3600))),
    }))
    .expect("the embedded store cannot fail to unlock");
    store
}

/// A poll from a device with no roles, permissions or context, over HTTP:
/// what nearly every device sends.
pub fn plain_poll<'a>(
    username: &'a str,
    fingerprint: Fingerprint,
    secret: SealOnCreate<'a>,
) -> Poll<'a> {
    Poll {
        username,
        fingerprint,
        transport: Transport::Http,
        source_addr: None,
        client_id: None,
        roles: &[],
        permissions: &[],
        context: None,
        secret,
        preauthorized: false,
    }
}

/// The fingerprint the store bench gives every device. The decision only
/// compares fingerprints for equality, so one value for all costs the same
/// as one per device and keeps a million of them out of the cache.
pub const BENCH_FINGERPRINT: Fingerprint = Fingerprint([7; 32]);

/// Creates pending requests for devices `0..n`, in a random order, each
/// with [`BENCH_FINGERPRINT`] and a [`SEALED_LEN`]-byte sealed secret.
pub fn fill_pending(store: &EmbeddedStore, n: u32, now: UnixMillis) {
    for i in XorShift64::new(0x5eed).permutation(n) {
        let name = DeviceName::new(i);
        let poll = plain_poll(
            name.as_str(),
            BENCH_FINGERPRINT,
            SealOnCreate::Sealed(vec![0; SEALED_LEN]),
        );
        now_or_never(store.register(poll, now)).expect("room for every pending request");
    }
}
