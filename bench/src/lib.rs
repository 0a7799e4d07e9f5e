//! Shared pieces of fleetgate's criterion benches and of the memory example.
//!
//! The benches measure the pure core (the codecs, request validation,
//! fingerprints, the rate limiter, the registration decision on the embedded
//! store, and metric recording) without sockets, so a slower parser or a
//! costlier store shows up here before it shows up in a load test.
//!
//! # Layout
//! - [`fixtures`]: the wire bytes and JSON bodies every bench parses, each
//!   field annotated, shared with `tests/fixtures.rs`, which checks that they
//!   are valid.
//! - [`pending`]: device names without allocation, a poll-once executor for
//!   the embedded store (it never suspends), and filling a store with
//!   pending requests.
//! - [`rss`]: the process's resident set size, from `/proc/self/status`.
//! - This file: quick mode, and the criterion configuration every bench uses.
//!
//! # Quick mode
//! `cargo bench -p fleetgate-bench -- --test` runs every bench once
//! (criterion's test mode), and the benches also shrink their set-up: the
//! 1,000,000-pending case is filled with [`QUICK_LARGE_PENDING`] requests
//! instead, and says so. `FLEETGATE_BENCH_QUICK=1` does the same and also
//! shortens criterion's warm-up and measurement, for rough numbers in a few
//! seconds per bench. See `bench/README.md`.
#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::time::Duration;

use criterion::Criterion;

pub mod fixtures;
pub mod pending;
pub mod rss;

/// Set to `1` to run the benches in quick mode (see the crate docs).
pub const QUICK_ENV: &str = "FLEETGATE_BENCH_QUICK";

/// How many pending requests stand in for 1,000,000 in quick mode: enough to
/// exercise the same code, small enough to fill in a fraction of a second.
pub const QUICK_LARGE_PENDING: u32 = 100_000;

/// Whether this bench process runs in quick mode: `FLEETGATE_BENCH_QUICK=1`,
/// or criterion itself will not measure (its `--test` or `--list` mode, or
/// no `--bench` flag, which is how `cargo test --benches` runs a bench).
pub fn quick_mode() -> bool {
    quick_mode_from(std::env::args(), std::env::var_os(QUICK_ENV).as_deref())
}

/// [`quick_mode`] for given arguments (program name first, as
/// `std::env::args` yields them) and a given value of [`QUICK_ENV`].
pub fn quick_mode_from<I, S>(args: I, quick_env: Option<&OsStr>) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    if quick_env.is_some_and(|v| v == "1") {
        return true;
    }
    let mut bench = false;
    for arg in args.into_iter().skip(1) {
        match arg.as_ref() {
            "--test" | "--list" => return true,
            "--bench" => bench = true,
            _ => {}
        }
    }
    // Criterion runs each bench once when `--bench` is missing.
    !bench
}

/// The criterion configuration of every bench: criterion's defaults, or,
/// with `FLEETGATE_BENCH_QUICK=1`, a short warm-up and measurement.
/// Command-line flags (`--test`, `--measurement-time`, …) still override it.
pub fn criterion_config() -> Criterion {
    let c = Criterion::default();
    if std::env::var_os(QUICK_ENV).is_some_and(|v| v == "1") {
        c.warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500))
            .sample_size(10)
    } else {
        c
    }
}
