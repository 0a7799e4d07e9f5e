//! How records are laid out in Redis, and the decoding of script replies.
//!
//! A request is a Redis hash, so that scripts can read and change single
//! fields (`state`, `last`, `polls`) without parsing the whole record:
//!
//! | field | holds |
//! |---|---|
//! | `state` | `pending`, `granted` or `denied` |
//! | `fp` | the credential fingerprint, 64 hex digits |
//! | `at` | `granted_at` or `denied_at` (ms), absent while pending |
//! | `cert` | the client certificate issued at grant (PEM), CSR requests only |
//! | `first`, `last` | first and last poll (ms) |
//! | `polls` | number of polls |
//! | `transport` | `http` or `mqtt` |
//! | `sealed` | the sealed credential (raw bytes), removed at grant/deny |
//! | `roles`, `perms` | JSON arrays; replaced by the granted ones at grant |
//! | `ctx`, `cid`, `src` | context, client id, source address; absent when `None` |
//! | `by` | the rule that granted or denied the request; absent when an admin decided |
//!
//! A user is one JSON string (`UserRecord` as serde writes it): only whole
//! users are ever written, and no script looks inside one.

use fleetgate_registry::rule::DecidedBy;
use std::collections::HashMap;

use fleetgate_registry::clock::UnixMillis;
use fleetgate_registry::fingerprint::Fingerprint;
use fleetgate_registry::model::{RequestRecord, RequestState, Transport};
use fleetgate_registry::store::Poll;
use redis::Value;

/// A reply that is not what the script promises, or a stored record that
/// does not decode: a bug or a foreign writer in our namespace, never a
/// client's mistake and never an outage (the store answers
/// `StoreError::Corrupt` for it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected reply from redis: {0}")]
pub struct BadReply(pub String);

fn bad(what: impl Into<String>) -> BadReply {
    BadReply(what.into())
}

/// The name Redis stores for a transport (`http`, `mqtt`), taken from its
/// serde form so that a new transport needs no change here.
fn transport_name(t: Transport) -> String {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The fields of a new pending request that the caller supplies, as
/// `field, value` pairs for `HSET` (the script adds `state`, `fp`, `first`,
/// `last`, `polls` and `src`). Seals the credential: only the create path
/// calls this.
pub fn create_fields(poll: Poll<'_>) -> Vec<Vec<u8>> {
    let roles = serde_json::to_vec(poll.roles).unwrap_or_else(|_| b"[]".to_vec());
    let perms = serde_json::to_vec(poll.permissions).unwrap_or_else(|_| b"[]".to_vec());
    let mut out: Vec<Vec<u8>> = vec![
        b"transport".to_vec(),
        transport_name(poll.transport).into_bytes(),
        b"roles".to_vec(),
        roles,
        b"perms".to_vec(),
        perms,
    ];
    if let Some(c) = poll.context {
        out.extend([b"ctx".to_vec(), c.as_bytes().to_vec()]);
    }
    if let Some(c) = poll.client_id {
        out.extend([b"cid".to_vec(), c.as_bytes().to_vec()]);
    }
    let sealed = poll.secret.into_sealed();
    if !sealed.is_empty() {
        out.extend([b"sealed".to_vec(), sealed]);
    }
    out
}

/// The bytes of a bulk or simple string reply.
pub fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

pub fn text(v: &Value) -> Option<&str> {
    bytes(v).and_then(|b| std::str::from_utf8(b).ok())
}

pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// A script reply `{code, n, [field, value ...]}`: its code, its count and
/// the record fields (possibly none).
pub fn split_reply(v: Value) -> Result<(String, i64, Vec<Value>), BadReply> {
    let Value::Array(mut items) = v else {
        return Err(bad(format!("expected an array, got {v:?}")));
    };
    if items.len() < 2 {
        return Err(bad("a script reply has fewer than two items"));
    }
    let rest = items.split_off(2);
    let code = text(&items[0])
        .ok_or_else(|| bad("no reply code"))?
        .to_owned();
    let n = int(&items[1]).ok_or_else(|| bad("no reply count"))?;
    Ok((code, n, rest))
}

/// Field/value pairs (from `HGETALL` or a script reply) as a map.
pub fn fields(items: Vec<Value>) -> Result<HashMap<String, Vec<u8>>, BadReply> {
    if items.len() % 2 != 0 {
        return Err(bad("odd number of hash items"));
    }
    let mut map = HashMap::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let k = text(&k)
            .ok_or_else(|| bad("hash field is not text"))?
            .to_owned();
        let v = match v {
            Value::BulkString(b) => b,
            other => text(&other)
                .ok_or_else(|| bad("hash value is not a string"))?
                .as_bytes()
                .to_vec(),
        };
        map.insert(k, v);
    }
    Ok(map)
}

/// `HGETALL` as returned by redis-rs: an array of pairs (RESP2) or a map
/// (RESP3).
pub fn hash_items(v: Value) -> Result<Vec<Value>, BadReply> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Map(pairs) => Ok(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Nil => Ok(Vec::new()),
        other => Err(bad(format!("expected a hash, got {other:?}"))),
    }
}

/// Decodes a request hash. An empty map means no record.
pub fn decode_request(
    username: &str,
    f: &HashMap<String, Vec<u8>>,
) -> Result<Option<RequestRecord>, BadReply> {
    if f.is_empty() {
        return Ok(None);
    }
    let s = |name: &str| -> Option<&str> { f.get(name).and_then(|b| std::str::from_utf8(b).ok()) };
    let num = |name: &str| -> Result<u64, BadReply> {
        s(name).and_then(|v| v.parse().ok()).ok_or_else(|| {
            bad(format!(
                "request {username}: field {name} missing or not a number"
            ))
        })
    };
    let at = || num("at").map(UnixMillis);
    let state = match s("state") {
        Some("pending") => RequestState::Pending,
        Some("granted") => RequestState::Granted { granted_at: at()? },
        Some("denied") => RequestState::Denied { denied_at: at()? },
        other => return Err(bad(format!("request {username}: state {other:?}"))),
    };
    let mut fp = [0u8; 32];
    hex::decode_to_slice(s("fp").unwrap_or(""), &mut fp)
        .map_err(|_| bad(format!("request {username}: bad fingerprint")))?;
    let transport = serde_json::from_value(serde_json::Value::String(
        s("transport").unwrap_or("").to_owned(),
    ))
    .map_err(|_| bad(format!("request {username}: bad transport")))?;
    let json = |name: &str| f.get(name).map(Vec::as_slice).unwrap_or(b"[]");
    let roles = serde_json::from_slice(json("roles"))
        .map_err(|_| bad(format!("request {username}: bad roles")))?;
    let permissions = serde_json::from_slice(json("perms"))
        .map_err(|_| bad(format!("request {username}: bad permissions")))?;
    let source_addr = match s("src") {
        Some(a) => Some(
            a.parse()
                .map_err(|_| bad(format!("request {username}: bad source address")))?,
        ),
        None => None,
    };
    Ok(Some(RequestRecord {
        certificate: s("cert").filter(|c| !c.is_empty()).map(str::to_owned),
        username: username.to_owned(),
        fingerprint: Fingerprint(fp),
        state,
        transport,
        sealed: f.get("sealed").cloned().unwrap_or_default(),
        roles,
        permissions,
        context: s("ctx").map(str::to_owned),
        source_addr,
        client_id: s("cid").map(str::to_owned),
        first_seen: UnixMillis(num("first")?),
        last_seen: UnixMillis(num("last")?),
        polls: num("polls")?,
        decided_by: s("by").map(|n| DecidedBy::Rule(n.to_owned())),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_registry::store::SealOnCreate;

    fn poll<'a>(roles: &'a [String]) -> Poll<'a> {
        Poll {
            username: "dev01",
            fingerprint: Fingerprint([7; 32]),
            transport: Transport::Mqtt,
            source_addr: None,
            client_id: Some("c1"),
            roles,
            permissions: &[],
            context: None,
            secret: SealOnCreate::Sealed(vec![1, 2, 3]),
            preauthorized: false,
        }
    }

    #[test]
    fn created_fields_decode_back() {
        let roles = vec!["sensor".to_string()];
        let mut f: HashMap<String, Vec<u8>> = HashMap::new();
        let pairs = create_fields(poll(&roles));
        for kv in pairs.chunks(2) {
            f.insert(String::from_utf8(kv[0].clone()).unwrap(), kv[1].clone());
        }
        assert_eq!(f["transport"], b"mqtt");
        // What the script adds:
        for (k, v) in [
            ("state", "pending"),
            ("fp", &hex::encode([7u8; 32])),
            ("first", "5"),
            ("last", "9"),
            ("polls", "2"),
            ("src", "127.0.0.1:4000"),
        ] {
            f.insert(k.into(), v.as_bytes().to_vec());
        }
        let r = decode_request("dev01", &f).unwrap().unwrap();
        assert_eq!(r.state, RequestState::Pending);
        assert_eq!(r.fingerprint, Fingerprint([7; 32]));
        assert_eq!(r.transport, Transport::Mqtt);
        assert_eq!(r.sealed, vec![1, 2, 3]);
        assert_eq!(r.roles, roles);
        assert_eq!(r.client_id.as_deref(), Some("c1"));
        assert_eq!(r.context, None);
        assert_eq!(r.source_addr, Some("127.0.0.1:4000".parse().unwrap()));
        assert_eq!(
            (r.first_seen, r.last_seen, r.polls),
            (UnixMillis(5), UnixMillis(9), 2)
        );
    }

    #[test]
    fn granted_needs_its_time_and_bad_records_are_errors() {
        let mut f: HashMap<String, Vec<u8>> = HashMap::new();
        assert_eq!(decode_request("x", &f).unwrap(), None);
        f.insert("state".into(), b"granted".to_vec());
        assert!(decode_request("x", &f).is_err(), "granted without `at`");
        f.insert("state".into(), b"weird".to_vec());
        assert!(decode_request("x", &f).is_err());
    }

    #[test]
    fn script_replies_split() {
        let v = Value::Array(vec![
            Value::BulkString(b"collect".to_vec()),
            Value::Int(0),
            Value::BulkString(b"state".to_vec()),
            Value::BulkString(b"granted".to_vec()),
        ]);
        let (code, n, rest) = split_reply(v).unwrap();
        assert_eq!((code.as_str(), n, rest.len()), ("collect", 0, 2));
        assert!(split_reply(Value::Int(1)).is_err());
        assert!(fields(vec![Value::Int(1)]).is_err());
    }
}
