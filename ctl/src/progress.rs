//! The progress bar of a bulk decision, on stderr, and only when stderr is
//! a terminal: a pipe or a log file gets nothing extra.
//!
//! The bar redraws one line in place (`\r` and erase-line, the only escape
//! sequences the CLI writes itself), and [`Progress::finish`] clears it, so
//! the table or summary printed after it starts on a clean line.

use std::io::Write;
use std::time::Instant;

/// Columns of the bar itself.
const BAR: usize = 30;

pub struct Progress {
    enabled: bool,
    verb: &'static str,
    total: Option<u64>,
    done: u64,
    started: Instant,
    drawn: bool,
}

impl Progress {
    /// A bar for `verb` ("granting"), shown only when `enabled` (stderr is
    /// a terminal). `total` is the number of items when it is known.
    pub fn new(enabled: bool, verb: &'static str, total: Option<u64>) -> Progress {
        Progress {
            enabled,
            verb,
            total,
            done: 0,
            started: Instant::now(),
            drawn: false,
        }
    }

    /// Counts `n` more items decided and redraws.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if self.enabled {
            let line = self.line();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K{line}");
            let _ = err.flush();
            self.drawn = true;
        }
    }

    /// The bar's text: `granting [#####·····] 3000/10000 (4s)`.
    pub fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs();
        match self.total {
            Some(total) if total > 0 => {
                let done = self.done.min(total);
                let filled = (done as usize * BAR) / total as usize;
                format!(
                    "{} [{}{}] {done}/{total} ({secs}s)",
                    self.verb,
                    "#".repeat(filled),
                    "·".repeat(BAR - filled)
                )
            }
            _ => format!("{} … {} so far ({secs}s)", self.verb, self.done),
        }
    }

    /// Clears the bar's line.
    pub fn finish(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_count() {
        let mut p = Progress::new(false, "granting", Some(10_000));
        p.advance(5_000);
        let line = p.line();
        assert!(
            line.starts_with("granting [###############···············] 5000/10000"),
            "{line}"
        );
        p.advance(5_000);
        assert!(p.line().contains(&"#".repeat(BAR)));
        let mut open = Progress::new(false, "denying", None);
        open.advance(1000);
        assert!(open.line().starts_with("denying … 1000 so far"));
    }
}
