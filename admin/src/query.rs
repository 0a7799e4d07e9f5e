//! Percent-decoding of URL query strings and path segments, for the admin
//! routes' `?limit=&cursor=&prefix=&apiToken=` parameters and `{username}`
//! segments.
//!
//! The admin API needs only decoding, and only of short ASCII-heavy strings,
//! so this is one small, strict function instead of a URL crate: a `%` must
//! be followed by two hex digits, and the decoded bytes must be UTF-8. A
//! malformed string is the client's mistake ([`DecodeError`], answered 400),
//! never silently passed through.

/// A query string or path segment that is not valid percent-encoded UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("`%` at byte {0} is not followed by two hex digits")]
    BadEscape(usize),
    #[error("percent-decoded text is not valid UTF-8")]
    NotUtf8,
}

/// Which `+` rule applies: in a query string (`application/x-www-form-urlencoded`)
/// `+` stands for a space; in a path segment it is a literal `+`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plus {
    IsSpace,
    IsLiteral,
}

/// Decodes `%XX` escapes (and `+` per `plus`) in `input`.
pub fn percent_decode(input: &str, plus: Plus) -> Result<String, DecodeError> {
    let bytes = input.as_bytes();
    // Nothing to do for the common case; avoids decoding byte by byte.
    if !bytes.contains(&b'%') && (plus == Plus::IsLiteral || !bytes.contains(&b'+')) {
        return Ok(input.to_owned());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| hex_value(*b));
                let lo = bytes.get(i + 2).and_then(|b| hex_value(*b));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(DecodeError::BadEscape(i));
                };
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus == Plus::IsSpace => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The decoded `name=value` pairs of a query string, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Parses a raw query string (the part after `?`, without it). Empty
    /// pieces (`a=1&&b=2`) are skipped; a piece without `=` has an empty value.
    pub fn parse(raw: &str) -> Result<Self, DecodeError> {
        let mut pairs = Vec::new();
        for piece in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            pairs.push((
                percent_decode(name, Plus::IsSpace)?,
                percent_decode(value, Plus::IsSpace)?,
            ));
        }
        Ok(QueryParams { pairs })
    }

    /// The value of the first `name` parameter, if any. Later repeats are
    /// ignored, so `?limit=5&limit=9` means 5.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(percent_decode("dev01", Plus::IsSpace).unwrap(), "dev01");
        assert_eq!(percent_decode("", Plus::IsSpace).unwrap(), "");
    }

    #[test]
    fn escapes_decode_in_either_case() {
        assert_eq!(percent_decode("dev%30%31", Plus::IsSpace).unwrap(), "dev01");
        assert_eq!(percent_decode("a%2fb%2Fc", Plus::IsSpace).unwrap(), "a/b/c");
        assert_eq!(percent_decode("%40%2B", Plus::IsSpace).unwrap(), "@+");
        // Multi-byte UTF-8 split over escapes.
        assert_eq!(percent_decode("d%C3%A9v", Plus::IsLiteral).unwrap(), "dév");
    }

    #[test]
    fn plus_depends_on_where_the_text_is() {
        assert_eq!(percent_decode("a+b", Plus::IsSpace).unwrap(), "a b");
        assert_eq!(percent_decode("a+b", Plus::IsLiteral).unwrap(), "a+b");
        assert_eq!(percent_decode("a%2Bb", Plus::IsSpace).unwrap(), "a+b");
    }

    #[test]
    fn malformed_escapes_are_errors_not_passthrough() {
        assert_eq!(
            percent_decode("abc%", Plus::IsSpace),
            Err(DecodeError::BadEscape(3))
        );
        assert_eq!(
            percent_decode("%4", Plus::IsSpace),
            Err(DecodeError::BadEscape(0))
        );
        assert_eq!(
            percent_decode("x%zz", Plus::IsSpace),
            Err(DecodeError::BadEscape(1))
        );
        assert_eq!(
            percent_decode("%ff%fe", Plus::IsSpace),
            Err(DecodeError::NotUtf8)
        );
    }

    #[test]
    fn query_pairs_decode_and_first_value_wins() {
        let q = QueryParams::parse("state=granted&limit=5&&prefix=dev%2D&flag&limit=9").unwrap();
        assert_eq!(q.get("state"), Some("granted"));
        assert_eq!(q.get("limit"), Some("5"));
        assert_eq!(q.get("prefix"), Some("dev-"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("cursor"), None);
        assert!(QueryParams::parse("a=%g0").is_err());
        assert_eq!(QueryParams::parse("").unwrap(), QueryParams::default());
    }
}
