//! What the CLI prints, and how it keeps device-supplied text harmless.
//!
//! Usernames, contexts, client ids, source addresses, role names and
//! resources come from devices or from other admins; a terminal would obey
//! an escape sequence hidden in any of them. [`escape`] renders every
//! control character (C0, DEL, C1) and every invisible formatting or
//! bidirectional character as a visible escape (`\x1b`, `\u{202e}`) before
//! it reaches a table, a name line or an error message. `-o json` prints
//! the API's bytes; on a terminal the same characters are written as JSON
//! `\u` escapes instead ([`json_for_terminal`]), which denote the same
//! string.
//!
//! [`Table`] lines up columns by display width (a CJK character is two
//! columns) and fits the terminal by shrinking the widest columns first
//! and cutting cells at a character boundary with `…`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::cli::Format;
use crate::CtlError;

/// Characters that are not control characters (`char::is_control`) but
/// that a terminal does not show: zero-width and joiner characters, the
/// bidirectional embeddings, overrides and isolates (which reorder what
/// follows them on the line), the line and paragraph separators, the word
/// joiner and invisible operators, the byte order mark, and interlinear
/// annotation marks.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}')
}

/// Whether `c` must never reach a terminal as itself.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || is_invisible_format(c)
}

/// `s` with every unsafe character rendered visibly: `\n`, `\r`, `\t`,
/// `\xNN` for other ASCII controls and DEL, `\u{NNNN}` above.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && is_unsafe_char(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A JSON text with every unsafe character written as a JSON `\u` escape.
/// Outside strings a JSON text holds only structure and whitespace, so the
/// replacement keeps it the same document; it only changes bytes a
/// terminal would act on.
pub fn json_for_terminal(json: &str) -> Cow<'_, str> {
    if !json
        .chars()
        .any(|c| is_unsafe_char(c) && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_unsafe_char(c) && !matches!(c, '\n' | '\r' | '\t') {
            // Every unsafe character is in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The display width of an (escaped) string.
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `s` cut to at most `max` columns, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if width(s) <= max {
        return Cow::Borrowed(s);
    }
    if max == 0 {
        return Cow::Borrowed("");
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > max - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    Cow::Owned(out)
}

/// The narrowest a column is shrunk to, so that a cut cell still shows
/// something of its start.
const MIN_COLUMN: usize = 6;
/// Spaces between columns.
const GAP: usize = 2;

/// Rows of cells under a header, printed in aligned columns.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    /// Columns given up first when the table is too wide: free text such
    /// as a context, rather than the name an operator reads a row by.
    flexible: Vec<bool>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
            flexible: vec![false; headers.len()],
        }
    }

    /// Marks the columns under these headers as the first to shrink.
    pub fn flexible(mut self, headers: &[&str]) -> Table {
        for (flag, header) in self.flexible.iter_mut().zip(&self.headers) {
            *flag = headers.contains(header);
        }
        self
    }

    /// Adds a row; each cell is escaped here, so callers pass the raw
    /// strings from the API.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .map(|c| escape(c.as_ref()).into_owned())
            .collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The column widths that fit `max_width` (when given): the widest
    /// flexible column loses a column at a time, then the widest other
    /// column but the first, then the first, until the line fits or every
    /// column is at its minimum.
    fn widths(&self, max_width: Option<usize>, with_header: bool) -> Vec<usize> {
        let mut widths: Vec<usize> = self
            .headers
            .iter()
            .map(|h| if with_header { width(h) } else { 0 })
            .collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let Some(max) = max_width else {
            return widths;
        };
        let total = |ws: &[usize]| ws.iter().sum::<usize>() + GAP * ws.len().saturating_sub(1);
        // Flexible columns first, then any but the first (the name a row
        // is read by), then the first too.
        let phases: [&dyn Fn(usize) -> bool; 3] = [&|i| self.flexible[i], &|i| i > 0, &|_| true];
        for may_shrink in phases {
            while total(&widths) > max {
                let widest = widths
                    .iter()
                    .enumerate()
                    .filter(|(i, w)| may_shrink(*i) && **w > MIN_COLUMN)
                    .max_by_key(|(i, w)| (**w, std::cmp::Reverse(*i)))
                    .map(|(i, _)| i);
                match widest {
                    Some(i) => widths[i] -= 1,
                    None => break,
                }
            }
        }
        widths
    }

    /// The table as lines, with the header when `with_header`.
    pub fn render(&self, max_width: Option<usize>, with_header: bool) -> String {
        let widths = self.widths(max_width, with_header);
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, (cell, w)) in cells.zip(&widths).enumerate() {
                let cell = truncate(cell, *w);
                if i > 0 {
                    text.push_str(&" ".repeat(GAP));
                }
                text.push_str(&cell);
                text.push_str(&" ".repeat(w - width(&cell)));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        if with_header {
            line(&mut self.headers.iter().copied());
        }
        for row in &self.rows {
            line(&mut row.iter().map(String::as_str));
        }
        out
    }
}

/// The terminal, or the pipe, a command prints to.
pub struct Ui {
    pub format: Format,
    /// The width tables must fit: `COLUMNS` when set, else the terminal's,
    /// else none (a pipe gets whole cells).
    pub width: Option<usize>,
    pub stdout_is_terminal: bool,
    pub stderr_is_terminal: bool,
}

impl Ui {
    /// The process's own stdout and stderr.
    pub fn from_process(format: Format) -> Ui {
        let stdout_is_terminal = std::io::stdout().is_terminal();
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok())
            .filter(|c| *c > 0);
        let terminal = stdout_is_terminal
            .then(terminal_size::terminal_size)
            .flatten()
            .map(|(w, _)| w.0 as usize);
        Ui {
            format,
            width: columns.or(terminal),
            stdout_is_terminal,
            stderr_is_terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Prints `text` to stdout as it is (it is already escaped or JSON).
    pub fn print(&self, text: &str) -> Result<(), CtlError> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .inspect_err(|e| {
                // A closed pipe (`| head`) is the reader's choice, not ours.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    std::process::exit(0);
                }
            })
            .map_err(|e| CtlError::Local(format!("cannot write to stdout: {e}")))
    }

    /// Prints one API answer as `-o json` does: its bytes and a newline.
    pub fn print_json(&self, body: &[u8]) -> Result<(), CtlError> {
        let text = String::from_utf8_lossy(body);
        let text = text.trim_end();
        let text = if self.stdout_is_terminal {
            json_for_terminal(text)
        } else {
            Cow::Borrowed(text)
        };
        self.print(&format!("{text}\n"))
    }

    /// Prints a table.
    pub fn print_table(&self, table: &Table) -> Result<(), CtlError> {
        self.print(&table.render(self.width, true))
    }

    /// Prints names, one a line, escaped.
    pub fn print_names<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), CtlError> {
        let mut text = String::new();
        for name in names {
            text.push_str(&escape(name));
            text.push('\n');
        }
        self.print(&text)
    }

    /// Names a failed item on stderr: `error: <what>`, escaped.
    pub fn item_failed(&self, what: &str) {
        eprintln!("error: {}", escape(what));
    }

    /// A note on stderr (e.g. the summary of a dry run).
    pub fn note(&self, what: &str) {
        eprintln!("{}", escape(what));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_renders_every_control_and_invisible_character() {
        assert_eq!(escape("sensor-0001"), "sensor-0001");
        assert_eq!(escape("a\x1b[31mred\x07"), "a\\x1b[31mred\\x07");
        assert_eq!(escape("line\nnext\ttab\r"), "line\\nnext\\ttab\\r");
        assert_eq!(escape("del\x7f"), "del\\x7f");
        // C1 CSI, which some terminals obey as ESC [.
        assert_eq!(escape("c1\u{9b}2J"), "c1\\u{009b}2J");
        // A right-to-left override would reorder the rest of the line.
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escape("zero\u{200b}width"), "zero\\u{200b}width");
        // Printable non-ASCII text is kept.
        assert_eq!(escape("Gerät 温度"), "Gerät 温度");
    }

    #[test]
    fn json_for_terminal_keeps_the_document_and_hides_the_bytes() {
        let raw = "{\"context\":\"x\u{9b}2J\u{202e}\",\"n\":1}";
        let safe = json_for_terminal(raw);
        assert!(!safe.chars().any(is_unsafe_char));
        let a: serde_json::Value = serde_json::from_str(raw).unwrap();
        let b: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(a, b);
        assert!(matches!(json_for_terminal("{\"a\":1}"), Cow::Borrowed(_)));
    }

    #[test]
    fn truncate_cuts_at_a_character_boundary_by_display_width() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdefg", 6), "abcde…");
        // Each of these is two columns wide: 3 of them and … is 7 > 6.
        assert_eq!(truncate("温度温度温度", 6), "温度…");
        assert_eq!(width(&truncate("温度温度温度", 6)), 5);
        assert_eq!(truncate("é".repeat(10).as_str(), 4), "ééé…");
    }

    fn sample() -> Table {
        let mut t = Table::new(&["NAME", "STATE", "CONTEXT"]);
        t.row(["sensor-0001", "pending", "line 4, near the \x1b[2J door"]);
        t.row(["s2", "granted", ""]);
        t
    }

    #[test]
    fn columns_line_up() {
        let text = sample().render(None, true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME         STATE    CONTEXT");
        assert_eq!(
            lines[1],
            "sensor-0001  pending  line 4, near the \\x1b[2J door"
        );
        assert_eq!(lines[2], "s2           granted");
    }

    #[test]
    fn a_table_fits_the_width_it_is_given() {
        for max in [30, 36, 40, 50] {
            let text = sample().render(Some(max), true);
            for line in text.lines() {
                assert!(width(line) <= max, "{max}: {line:?} is {}", width(line));
            }
            assert!(text.contains('…'), "{max}: {text}");
            // The start of every cell is still there to read.
            assert!(text.contains("sensor"), "{max}: {text}");
        }
        // Wide enough: nothing is cut.
        assert!(!sample().render(Some(80), true).contains('…'));
    }

    #[test]
    fn flexible_columns_shrink_first() {
        let t = sample().flexible(&["CONTEXT"]);
        let text = t.render(Some(36), true);
        assert!(text.contains("sensor-0001  pending"), "{text}");
        assert!(text.lines().all(|l| width(l) <= 36), "{text}");
    }

    #[test]
    fn wide_characters_are_measured_by_columns() {
        let mut t = Table::new(&["NAME", "CONTEXT"]);
        t.row(["a", "温度温度温度温度温度温度"]);
        t.row(["bb", "x"]);
        let text = t.render(Some(16), true);
        for line in text.lines() {
            assert!(width(line) <= 16, "{line:?}");
        }
    }
}
