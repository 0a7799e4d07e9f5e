//! Measures the embedded store's hot path (`Store::register` on a known
//! pending request) from 1 and 2 threads, against the same store behind one
//! global mutex as the baseline, in one run. It shows whether two proxy
//! workers contend on the store.
//!
//! ```text
//! cargo run --release -p fleetgate-registry --example store_scaling
//! ```

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll as TaskPoll, Waker};
use std::time::{Duration, Instant};

use fleetgate_registry::decision::{LockState, Windows};
use fleetgate_registry::embedded::EmbeddedStore;
use fleetgate_registry::fingerprint::Fingerprint;
use fleetgate_registry::model::Transport;
use fleetgate_registry::store::{Poll, SealOnCreate, Store};
use fleetgate_registry::UnixMillis;

const DEVICES: usize = 100_000;
const RUN: Duration = Duration::from_secs(2);

fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        TaskPoll::Ready(v) => v,
        TaskPoll::Pending => unreachable!("the embedded store never suspends"),
    }
}

fn poll(name: &str) -> Poll<'_> {
    Poll {
        username: name,
        fingerprint: Fingerprint([7; 32]),
        transport: Transport::Http,
        source_addr: None,
        client_id: None,
        roles: &[],
        permissions: &[],
        context: None,
        secret: SealOnCreate::Sealed(vec![0; 28]),
        preauthorized: false,
    }
}

/// Polls from `threads` threads for `RUN`; returns polls per second.
fn run(threads: usize, names: &Arc<Vec<String>>, op: Arc<dyn Fn(&str) + Send + Sync>) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let names = names.clone();
            let op = op.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut i = t * 7919;
                while start.elapsed() < RUN {
                    for _ in 0..1000 {
                        op(&names[i % names.len()]);
                        i += 1;
                    }
                    n += 1000;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let now = UnixMillis::now();
    let store = Arc::new(EmbeddedStore::in_memory(Windows::default(), 10_000_000));
    ready(store.set_lock_state(LockState {
        unlocked_until: Some(now.plus(Duration::from_secs(3600))),
    }))
    .unwrap();
    let names: Arc<Vec<String>> =
        Arc::new((0..DEVICES).map(|i| format!("device-{i:06}")).collect());
    for n in names.iter() {
        ready(store.register(poll(n), now)).unwrap();
    }
    let sharded: Arc<dyn Fn(&str) + Send + Sync> = {
        let s = store.clone();
        Arc::new(move |n: &str| {
            ready(s.register(poll(n), now)).unwrap();
        })
    };
    let global = Arc::new(Mutex::new(()));
    let baseline: Arc<dyn Fn(&str) + Send + Sync> = {
        let s = store.clone();
        Arc::new(move |n: &str| {
            let _g = global.lock().unwrap();
            ready(s.register(poll(n), now)).unwrap();
        })
    };
    println!("{DEVICES} pending devices, re-polled for {RUN:?} per row");
    let b1 = run(1, &names, baseline.clone());
    let b2 = run(2, &names, baseline);
    let s1 = run(1, &names, sharded.clone());
    let s2 = run(2, &names, sharded);
    println!("global mutex, 1 thread : {b1:>12.0} polls/s");
    println!(
        "global mutex, 2 threads: {b2:>12.0} polls/s  ({:.2}x of 1 thread)",
        b2 / b1
    );
    println!("sharded,      1 thread : {s1:>12.0} polls/s");
    println!(
        "sharded,      2 threads: {s2:>12.0} polls/s  ({:.2}x of 1 thread)",
        s2 / s1
    );
}
