//! Memory per pending request on the embedded store, measured as resident
//! set size: `VmRSS` before and after 1,000,000 devices each create a
//! pending request through `Store::register`, as `Registry` does it (a real
//! fingerprint per device, the 12-character password sealed lazily on
//! creation, usernames like `device-000123`, devices arriving in random
//! order). The target of issue 7 is at most 256 bytes per pending request.
//!
//! ```text
//! cargo run --release -p fleetgate-bench --example pending_memory [DEVICES]
//! ```
//!
//! It also prints where the bytes go, from the sizes of the types and of
//! glibc's malloc chunks, so a miss can be traced to its cause.

use std::mem::size_of;
use std::time::Instant;

use fleetgate_bench::pending::{
    now_or_never, plain_poll, unlocked_store, DeviceName, XorShift64, MAX_DEVICES, SEALED_LEN,
};
use fleetgate_bench::rss::vm_rss_bytes;
use fleetgate_registry::embedded::open::{CompactString, OpenRequest, SEALED_INLINE};
use fleetgate_registry::fingerprint::{CredentialKind, Fingerprint};
use fleetgate_registry::secrets::Secrets;
use fleetgate_registry::store::{SealOnCreate, Store};
use fleetgate_registry::UnixMillis;

/// The target of issue 7.
const TARGET_BYTES: f64 = 256.0;
/// Entries a `BTreeMap` node holds (`2 * B - 1` with std's `B = 6`).
const BTREE_CAPACITY: usize = 11;

/// The bytes glibc's malloc takes for a request of `n` bytes: the request
/// plus an 8-byte header, rounded up to 16, at least 32.
fn malloc_chunk(n: usize) -> usize {
    (n + 8).div_ceil(16).max(2) * 16
}

/// `pw-000000123`: a 12-character password for device `i`.
fn password(i: u32) -> [u8; 12] {
    let mut p = *b"pw-000000000";
    let mut n = i;
    for slot in p[3..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    p
}

fn main() {
    let devices: u32 = match std::env::args().nth(1) {
        Some(a) => a.parse().expect("DEVICES must be a whole number"),
        None => MAX_DEVICES,
    };
    let secrets = Secrets::derive(&[42; 32]);
    let now = UnixMillis::now();
    let store = unlocked_store(devices as usize, now);
    // Allocated before the first reading, so it is not counted.
    let order = XorShift64::new(0x5eed).permutation(devices);

    let before = vm_rss_bytes().expect("VmRSS from /proc/self/status (Linux only)");
    let started = Instant::now();
    for &i in &order {
        let name = DeviceName::new(i);
        let username = name.as_str();
        let secret = password(i);
        let fingerprint = Fingerprint::compute(
            &secrets,
            username,
            CredentialKind::Password,
            &secret,
            &[],
            &[],
        );
        let poll = plain_poll(
            username,
            fingerprint,
            SealOnCreate::Lazy {
                secrets: &secrets,
                fingerprint,
                username,
                kind: CredentialKind::Password,
                secret: &secret,
            },
        );
        now_or_never(store.register(poll, now)).expect("room for every pending request");
    }
    let fill = started.elapsed();
    let after = vm_rss_bytes().expect("VmRSS from /proc/self/status");
    let pending = now_or_never(store.pending_count()).expect("the embedded store answers");
    assert_eq!(pending, devices as usize, "every device created a request");
    let sample = now_or_never(store.get_request(DeviceName::new(0).as_str(), now))
        .expect("the embedded store answers")
        .expect("device 0 is pending");
    assert_eq!(sample.sealed.len(), SEALED_LEN);

    let per = (after - before) as f64 / f64::from(devices);
    println!(
        "{devices} pending requests created in {:.2} s ({:.0}/s)",
        fill.as_secs_f64(),
        f64::from(devices) / fill.as_secs_f64()
    );
    println!(
        "VmRSS before {:.1} MiB, after {:.1} MiB, growth {:.1} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after - before) as f64 / 1048576.0
    );
    println!(
        "=> {per:.0} bytes per pending request (target <= {TARGET_BYTES:.0}): {}",
        if per <= TARGET_BYTES { "met" } else { "MISSED" }
    );

    // Where the bytes go.
    let name_len = sample.username.len();
    let key = size_of::<CompactString>();
    // The map's value is a `Box<OpenRequest>`: the slot holds the name and
    // a pointer, and the request is one malloc chunk of its own.
    let pointer = size_of::<Box<OpenRequest>>();
    let record = malloc_chunk(size_of::<OpenRequest>());
    let inline = key + pointer;
    // Keys up to 24 bytes and sealed secrets up to SEALED_INLINE bytes live
    // inside the entry; longer ones take a heap chunk.
    let heap_key = if name_len > key {
        malloc_chunk(name_len)
    } else {
        0
    };
    let heap_sealed = if SEALED_LEN > SEALED_INLINE {
        malloc_chunk(SEALED_LEN)
    } else {
        0
    };
    let heap = record + heap_key + heap_sealed;
    let leaf_node = BTREE_CAPACITY * inline + 16;
    println!();
    println!("breakdown (sizes from the types and glibc's malloc chunk rounding):");
    for (what, bytes) in [
        (
            format!("map key CompactString, inline ({name_len} B name)"),
            key,
        ),
        ("pointer to the boxed OpenRequest".to_string(), pointer),
        (
            format!(
                "the OpenRequest's chunk ({} B request)",
                size_of::<OpenRequest>()
            ),
            record,
        ),
        (
            "the key's heap copy (names over 24 B only)".to_string(),
            heap_key,
        ),
        (
            format!("sealed secret ({SEALED_LEN} B), heap only over {SEALED_INLINE} B"),
            heap_sealed,
        ),
    ] {
        println!("  {what:<48}{bytes:>5} B");
    }
    println!(
        "  {:<48}{:>5} B",
        "= with every B-tree slot full",
        inline + heap
    );
    let slack = per - (inline + heap) as f64;
    let slot_use = inline as f64 / (per - heap as f64);
    println!(
        "  {:<48}{slack:>5.0} B",
        "measured minus that: B-tree slack"
    );
    println!(
        "    (empty slots in {leaf_node}-byte leaves of {BTREE_CAPACITY} entries, internal nodes, \
         allocator slack; implied average slot use {:.0}%)",
        slot_use * 100.0
    );
}
