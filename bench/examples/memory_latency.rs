//! The floor under the 1,000,000-pending store bench: how long one
//! dependent random read takes when the working set is as large as a store
//! holding a million pending requests (512 MiB), against one that fits in
//! cache (1 MiB).
//!
//! A re-poll must at least read and update its own record, which at a
//! million devices polled in random order is almost never in cache, so a
//! poll on the large store cannot cost less than the small store's poll
//! plus one such read. `docs/BENCHMARKS.md` (criterion section) uses it to judge the
//! 1M-vs-1k target.
//!
//! ```text
//! cargo run --release -p fleetgate-bench --example memory_latency
//! ```

use std::hint::black_box;
use std::time::Instant;

use fleetgate_bench::pending::XorShift64;

const READS: u32 = 5_000_000;

fn main() {
    for mib in [1usize, 512] {
        let n = mib * 1024 * 1024 / size_of::<usize>();
        // One random cycle through every slot (Sattolo's algorithm), so each
        // read's address depends on the previous read and none can be
        // prefetched or overlapped.
        let mut next: Vec<usize> = (0..n).collect();
        let mut rng = XorShift64::new(0x5eed);
        for i in (1..n).rev() {
            let j = (rng.next_u64() % i as u64) as usize;
            next.swap(i, j);
        }
        let mut at = 0usize;
        let started = Instant::now();
        for _ in 0..READS {
            at = next[at];
        }
        let per = started.elapsed().as_nanos() as f64 / f64::from(READS);
        black_box(at);
        println!("{mib:>4} MiB working set: {per:>6.1} ns per dependent random read");
    }
}
