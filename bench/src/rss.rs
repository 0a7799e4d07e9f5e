//! The process's resident set size, for the memory measurements.
//!
//! `VmRSS` in `/proc/self/status` counts the pages the process has touched
//! and still holds, which is what a pending request really costs the
//! machine: the record, its heap allocations, the map nodes around it, and
//! the allocator's own overhead.

use std::fs;

/// `VmRSS` of this process in bytes, or `None` where `/proc` is unavailable
/// (not Linux) or the line is missing.
pub fn vm_rss_bytes() -> Option<u64> {
    parse_vm_rss(&fs::read_to_string("/proc/self/status").ok()?)
}

/// Finds `VmRSS:   123456 kB` in the text of a `/proc/<pid>/status` file.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next()? {
        "kB" => Some(value * 1024),
        _ => None,
    }
}
