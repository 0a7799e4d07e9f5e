//! `RESOURCE:OPERATION[:CONTEXT]` arguments, turned into the API's
//! permission objects `{"resource", "operation", "context"}`.
//!
//! An MQTT topic filter may itself contain `:`, so the string is read from
//! the right: the last field is a context (`mqtt`, `http`) or an operation;
//! what is left of the operation is the resource, colons and all. Context
//! defaults to `mqtt`, the context the relay enforces. Only the shape is
//! checked here; the server applies its own rules (lengths, counts) and its
//! 422 names the one broken.

use serde_json::{json, Value};

use crate::CtlError;

const OPERATIONS: [&str; 3] = ["read", "write", "readWrite"];
const CONTEXTS: [&str; 2] = ["mqtt", "http"];

/// One parsed permission argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub resource: String,
    pub operation: &'static str,
    pub context: &'static str,
}

impl Permission {
    /// Parses `RESOURCE:OPERATION[:CONTEXT]`. The operation is matched
    /// without regard to case (`readwrite` is `readWrite`).
    pub fn parse(arg: &str) -> Result<Permission, CtlError> {
        let usage = || {
            CtlError::Usage(format!(
                "`{arg}` is not RESOURCE:OPERATION[:CONTEXT] (operation read, write or \
                 readWrite; context mqtt or http), e.g. devices/{{username}}/#:readWrite"
            ))
        };
        let operation_of = |s: &str| {
            OPERATIONS
                .iter()
                .copied()
                .find(|op| op.eq_ignore_ascii_case(s))
        };
        let (rest, last) = arg.rsplit_once(':').ok_or_else(usage)?;
        let (resource, operation, context) = match CONTEXTS.iter().copied().find(|c| *c == last) {
            Some(context) => {
                let (resource, op) = rest.rsplit_once(':').ok_or_else(usage)?;
                (resource, operation_of(op).ok_or_else(usage)?, context)
            }
            None => (rest, operation_of(last).ok_or_else(usage)?, "mqtt"),
        };
        if resource.is_empty() {
            return Err(usage());
        }
        Ok(Permission {
            resource: resource.to_owned(),
            operation,
            context,
        })
    }

    /// The API's JSON for this permission.
    pub fn to_json(&self) -> Value {
        json!({"resource": self.resource, "operation": self.operation, "context": self.context})
    }
}

/// Parses every argument, failing on the first that is not a permission.
pub fn parse_all(args: &[String]) -> Result<Vec<Value>, CtlError> {
    args.iter()
        .map(|a| Permission::parse(a).map(|p| p.to_json()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(resource: &str, operation: &'static str, context: &'static str) -> Permission {
        Permission {
            resource: resource.into(),
            operation,
            context,
        }
    }

    #[test]
    fn context_defaults_to_mqtt() {
        assert_eq!(
            Permission::parse("devices/{username}/#:readWrite").unwrap(),
            p("devices/{username}/#", "readWrite", "mqtt")
        );
    }

    #[test]
    fn an_explicit_context_and_any_case_of_the_operation() {
        assert_eq!(
            Permission::parse("/api/x/#:READ:http").unwrap(),
            p("/api/x/#", "read", "http")
        );
        assert_eq!(
            Permission::parse("a:readwrite:mqtt").unwrap(),
            p("a", "readWrite", "mqtt")
        );
    }

    #[test]
    fn colons_inside_the_resource_are_kept() {
        assert_eq!(
            Permission::parse("site:4/line:2/#:write").unwrap(),
            p("site:4/line:2/#", "write", "mqtt")
        );
        assert_eq!(
            Permission::parse("urn:x:read:http").unwrap(),
            p("urn:x", "read", "http")
        );
    }

    #[test]
    fn malformed_arguments_are_usage_errors() {
        for bad in [
            "plant/#",
            ":read",
            "plant/#:delete",
            "plant/#:read:ftp",
            "mqtt",
        ] {
            let err = Permission::parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }
}
