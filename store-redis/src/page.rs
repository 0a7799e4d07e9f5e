//! One keyset page merged from the 64 buckets' sorted indexes.
//!
//! The page is the first `limit + 1` usernames after the cursor over all
//! buckets (the extra one tells whether there is a next page). Asking every
//! bucket for `limit + 1` names is always enough, but moves 64 times the
//! page; with 1,000,000 pending requests a 1000-item page took 279 ms that
//! way (`listing_stays_fast_with_a_million_pending`, see docs/ARCHITECTURE.md (section "State: the Redis store")).
//! Usernames spread evenly over buckets, so each bucket is first asked for
//! about twice its share. A bucket that returned a full batch whose last name
//! is still below the page's cut may hide names that belong on the page; only
//! those buckets are asked again, from their last name on. The result is
//! exact: every name not fetched sorts after the cut.

use std::future::Future;

use futures_util::future::join_all;

/// The first batch asked of each bucket for a page of `want` names.
pub fn first_batch(want: usize, buckets: usize) -> usize {
    want.min(want * 2 / buckets + 8)
}

/// Merges a page of `limit` names from `buckets` sorted sources.
/// `fetch(bucket, min, n)` returns up to `n` names of one bucket, in order,
/// starting at the `ZRANGEBYLEX`-style bound `min` (`[x`, `(x` or `-`);
/// fewer than `n` means the bucket has no more. Returns the page's names and
/// whether more follow.
pub async fn merge<F, Fut, E>(
    buckets: usize,
    min: &[u8],
    limit: usize,
    fetch: F,
) -> Result<(Vec<String>, bool), E>
where
    F: Fn(usize, Vec<u8>, usize) -> Fut,
    Fut: Future<Output = Result<Vec<String>, E>>,
{
    let want = limit + 1;
    let mut got: Vec<Vec<String>> = vec![Vec::new(); buckets];
    let mut exhausted = vec![false; buckets];
    let mut asks: Vec<(usize, Vec<u8>, usize)> = (0..buckets)
        .map(|b| (b, min.to_vec(), first_batch(want, buckets)))
        .collect();
    loop {
        let replies = join_all(asks.iter().map(|(b, m, n)| fetch(*b, m.clone(), *n))).await;
        for ((b, _, n), names) in asks.iter().zip(replies) {
            let names = names?;
            exhausted[*b] = names.len() < *n;
            got[*b].extend(names);
        }
        let mut all: Vec<&String> = got.iter().flatten().collect();
        all.sort_unstable();
        // The page ends at the `want`-th name, if there are that many.
        let cut = all.get(want - 1).map(|s| s.as_str());
        asks = (0..buckets)
            .filter(|b| !exhausted[*b])
            .filter_map(|b| {
                let last = got[b].last()?;
                cut.is_none_or(|c| last.as_str() < c)
                    .then(|| (b, [b"(", last.as_bytes()].concat(), want))
            })
            .collect();
        if asks.is_empty() {
            let more = all.len() > limit;
            let page = all.into_iter().take(limit).cloned().collect();
            return Ok((page, more));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Buckets as sorted vectors, and a fetch that counts the names moved.
    fn run(buckets: &[Vec<String>], min: &str, limit: usize) -> (Vec<String>, bool, usize) {
        let moved = Cell::new(0);
        let fetch = |b: usize, min: Vec<u8>, n: usize| {
            let min = String::from_utf8(min).unwrap();
            let names: Vec<String> = buckets[b]
                .iter()
                .filter(|x| match min.split_at(1) {
                    ("[", m) => x.as_str() >= m,
                    ("(", m) => x.as_str() > m,
                    _ => true,
                })
                .take(n)
                .cloned()
                .collect();
            moved.set(moved.get() + names.len());
            std::future::ready(Ok::<_, ()>(names))
        };
        let fut = merge(buckets.len(), min.as_bytes(), limit, fetch);
        let (page, more) = futures_util::FutureExt::now_or_never(fut).unwrap().unwrap();
        (page, more, moved.get())
    }

    fn spread(names: &[String], n: usize, skew: impl Fn(&str) -> usize) -> Vec<Vec<String>> {
        let mut b = vec![Vec::new(); n];
        for x in names {
            b[skew(x) % n].push(x.clone());
        }
        for v in &mut b {
            v.sort();
        }
        b
    }

    fn expected(names: &[String], after: &str, limit: usize) -> (Vec<String>, bool) {
        let mut all: Vec<String> = names
            .iter()
            .filter(|x| x.as_str() > after)
            .cloned()
            .collect();
        all.sort();
        let more = all.len() > limit;
        all.truncate(limit);
        (all, more)
    }

    #[test]
    fn even_spread_moves_little_and_is_exact() {
        let names: Vec<String> = (0..100_000).map(|i| format!("dev{i:06}")).collect();
        let buckets = spread(&names, 64, crate::keys::bucket_of);
        let (page, more, moved) = run(&buckets, "(dev050000", 1000);
        assert_eq!((page, more), expected(&names, "dev050000", 1000));
        assert!(moved < 64 * 40, "moved {moved} names for a page of 1000");
    }

    #[test]
    fn skewed_buckets_are_asked_again_and_stay_exact() {
        let names: Vec<String> = (0..5000).map(|i| format!("u{i:05}")).collect();
        // Everything in bucket 3.
        let one = spread(&names, 64, |_| 3);
        let (page, more, _) = run(&one, "-", 100);
        assert_eq!((page, more), expected(&names, "", 100));
        // Alternating runs of 500 names per bucket.
        let runs = spread(&names, 64, |x| x[1..].parse::<usize>().unwrap() / 500);
        for limit in [1, 7, 100, 1000] {
            let (page, more, _) = run(&runs, "(u01234", limit);
            assert_eq!(
                (page, more),
                expected(&names, "u01234", limit),
                "limit {limit}"
            );
        }
    }

    #[test]
    fn short_and_empty_listings() {
        let names: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
        let buckets = spread(&names, 64, crate::keys::bucket_of);
        assert_eq!(run(&buckets, "-", 100).0, names);
        assert!(!run(&buckets, "-", 100).1);
        assert!(!run(&buckets, "-", 10).1, "exactly a page: no next page");
        assert!(run(&buckets, "-", 9).1);
        assert_eq!(run(&buckets, "(d9", 5).0, Vec::<String>::new());
    }
}
