//! Fuzz target: replaying the embedded store's journal from arbitrary bytes
//! (`fleetgate_registry::embedded::journal::replay_bytes`), what opening a
//! damaged data dir does.
//!
//! Beyond "no panic" it asserts:
//! - no record is accepted whose checksum fails: every line that yielded a
//!   record is checked here independently (eight lowercase hex digits, a
//!   space, JSON whose CRC-32 is those digits, a newline);
//! - only the last line may be dropped (torn), and `torn` is its length;
//!   an error names a line that is followed by more lines;
//! - round trip: the accepted records, encoded again, replay to the same
//!   records with nothing torn;
//! - with the first input byte non-zero the checksums are fixed up first,
//!   so the JSON record decoder is fuzzed too, not only the CRC check;
//! - a single flipped bit in an accepted line is never accepted: replay
//!   then fails, or (in the last line) drops that line as torn.
#![no_main]

use fleetgate_registry::embedded::journal::{encode, replay_bytes};
use libfuzzer_sys::fuzz_target;

/// The independent check of one accepted line (without its `\n`).
fn checksum_holds(line: &[u8]) -> bool {
    if line.len() < 10 || line[8] != b' ' {
        return false;
    }
    let digits = &line[..8];
    if !digits
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return false;
    }
    let want = u32::from_str_radix(std::str::from_utf8(digits).unwrap(), 16).unwrap();
    crc32fast::hash(&line[9..]) == want
}

/// The input with every line's checksum recomputed, so mutations of the
/// JSON reach the record decoder instead of all dying at the CRC.
fn with_fixed_checksums(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for line in data.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if body.len() >= 9 {
            out.extend_from_slice(format!("{:08x}", crc32fast::hash(&body[9..])).as_bytes());
            out.extend_from_slice(&line[8..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    // First byte: 0 feeds the rest as it is; anything else fixes the
    // checksums first.
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let fixed;
    let data = if mode == 0 {
        rest
    } else {
        fixed = with_fixed_checksums(rest);
        &fixed[..]
    };
    let lines: Vec<&[u8]> = data.split_inclusive(|b| *b == b'\n').collect();
    match replay_bytes(data) {
        Ok((records, torn)) => {
            assert!(torn <= data.len());
            let kept = lines.len() - usize::from(torn > 0);
            assert_eq!(
                records.len(),
                kept,
                "a line other than the last was dropped"
            );
            if torn > 0 {
                assert_eq!(torn, lines.last().unwrap().len());
            } else if let Some(last) = lines.last() {
                assert!(last.ends_with(b"\n"), "an unterminated line was kept");
            }
            for line in &lines[..kept] {
                let body = line
                    .strip_suffix(b"\n")
                    .expect("kept lines end in a newline");
                assert!(checksum_holds(body), "accepted a line whose checksum fails");
            }

            let again: Vec<u8> = records.iter().flat_map(encode).collect();
            let (records2, torn2) = replay_bytes(&again).expect("re-encoded records replay");
            assert_eq!(torn2, 0);
            assert_eq!(records2, records, "records do not round-trip");

            // Flip one bit of one kept line (chosen from the input).
            if kept > 0 {
                let seed = crc32fast::hash(data) as usize;
                let which = seed % kept;
                let start: usize = lines[..which].iter().map(|l| l.len()).sum();
                let body_len = lines[which].len() - 1; // not the newline
                let at = start + (seed / kept) % body_len;
                let mut damaged = data.to_vec();
                damaged[at] ^= 1 << (seed % 8);
                if damaged[at] == b'\n' {
                    return; // that splits the line instead: another input
                }
                match replay_bytes(&damaged) {
                    Err(c) => assert_eq!(c.line, which + 1),
                    Ok((r, t)) => {
                        assert_eq!(which + 1, lines.len(), "a damaged inner line was accepted");
                        assert_eq!(r.len(), kept - 1);
                        assert_eq!(t, lines[which].len());
                    }
                }
            }
        }
        Err(c) => {
            assert!(
                c.line >= 1 && c.line < lines.len(),
                "the last line is never corrupt"
            );
        }
    }
});
