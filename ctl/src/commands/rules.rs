//! `rules list|get|put|delete|order`.
//!
//! `rules put NAME --action grant|deny [--pattern REGEX] [--cidr CIDR]...`
//! sends exactly the fields given (`PUT /api/client-registry/rules/{name}`)
//! and prints the rule the server stored; the server validates it (a bad
//! regex or network is its 422, shown as is). `rules order NAME...` names
//! every rule, first match first.

use http::Method;
use serde_json::{json, Map, Value};

use crate::cli::{Format, RuleActionArg, RulePutArgs, RulesCommand, TransportArg};
use crate::client::{encode, Client};
use crate::output::{Table, Ui};
use crate::permission;
use crate::{CtlError, Outcome};

use super::{cell, print_described, text};

const RULES: &str = "/api/client-registry/rules";

/// The columns of `rules list` and the fields `rules get` shows first.
const FIELDS: [&str; 5] = ["name", "action", "usernamePattern", "sourceCidrs", "uses"];

pub async fn run(client: &Client, ui: &Ui, cmd: RulesCommand) -> Result<Outcome, CtlError> {
    match cmd {
        RulesCommand::List => {
            let reply = client.get(RULES).await?;
            print_list(ui, &reply.body, &reply.json()?)?;
            Ok(Outcome::Success)
        }
        RulesCommand::Get(arg) => {
            let reply = client
                .get(&format!("{RULES}/{}", encode(&arg.name)))
                .await?;
            show_rule(ui, &reply.body, &reply.json()?)?;
            Ok(Outcome::Success)
        }
        RulesCommand::Put(args) => {
            let path = format!("{RULES}/{}", encode(&args.name));
            let body = put_body(&args)?;
            let reply = client
                .call(Method::PUT, &path, Some(&body))
                .await?
                .success()?;
            show_rule(ui, &reply.body, &reply.json()?)?;
            Ok(Outcome::Success)
        }
        RulesCommand::Order(args) => {
            let reply = client
                .call(
                    Method::PUT,
                    &format!("{RULES}/order"),
                    Some(&json!({"names": args.names})),
                )
                .await?
                .success()?;
            print_list(ui, &reply.body, &reply.json()?)?;
            Ok(Outcome::Success)
        }
        RulesCommand::Delete(args) => {
            let mut failed = 0;
            for name in &args.names {
                let path = format!("{RULES}/{}", encode(name));
                match client.call(Method::DELETE, &path, None).await?.success() {
                    Ok(_) => match ui.format {
                        Format::Json => {}
                        Format::Name => ui.print_names([name.as_str()])?,
                        Format::Table => {
                            ui.print_names([format!("rule {name} deleted").as_str()])?
                        }
                    },
                    Err(e) => {
                        failed += 1;
                        ui.item_failed(&format!("delete rule {name}: {e}"));
                    }
                }
            }
            Ok(Outcome::from_failures(failed))
        }
    }
}

/// The JSON body of `rules put`: only the fields the flags set.
fn put_body(args: &RulePutArgs) -> Result<Value, CtlError> {
    let mut body = Map::new();
    let action = match args.action {
        RuleActionArg::Grant => "grant",
        RuleActionArg::Deny => "deny",
    };
    body.insert("action".into(), json!(action));
    if let Some(p) = &args.pattern {
        body.insert("usernamePattern".into(), json!(p));
    }
    if !args.cidrs.is_empty() {
        body.insert("sourceCidrs".into(), json!(args.cidrs));
    }
    if let Some(t) = args.transport {
        let t = match t {
            TransportArg::Http => "http",
            TransportArg::Mqtt => "mqtt",
        };
        body.insert("transport".into(), json!(t));
    }
    if args.require_csr {
        body.insert("requireCsr".into(), json!(true));
    }
    if !args.roles.is_empty() {
        body.insert("roles".into(), json!(args.roles));
    }
    if !args.permissions.is_empty() {
        body.insert(
            "permissions".into(),
            Value::Array(permission::parse_all(&args.permissions)?),
        );
    }
    if let Some(n) = args.max_uses {
        body.insert("maxUses".into(), json!(n));
    }
    if let Some(t) = &args.expires_at {
        body.insert("expiresAt".into(), json!(t));
    }
    if args.while_locked {
        body.insert("whileLocked".into(), json!(true));
    }
    Ok(Value::Object(body))
}

fn print_list(ui: &Ui, raw: &[u8], answer: &Value) -> Result<(), CtlError> {
    let items = answer
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| CtlError::BadReply("the rules answer has no `items`".into()))?;
    match ui.format {
        Format::Json => ui.print_json(raw),
        Format::Name => ui.print_names(items.iter().map(|r| text(r, "name"))),
        Format::Table => {
            let mut table = Table::new(&["NAME", "ACTION", "PATTERN", "SOURCES", "USES"])
                .flexible(&["PATTERN", "SOURCES"]);
            for rule in items {
                table.row(FIELDS.map(|f| cell(rule, f)));
            }
            ui.print_table(&table)
        }
    }
}

fn show_rule(ui: &Ui, raw: &[u8], rule: &Value) -> Result<(), CtlError> {
    match ui.format {
        Format::Json => ui.print_json(raw),
        Format::Name => ui.print_names([text(rule, "name")]),
        Format::Table => print_described(ui, rule, &FIELDS),
    }
}
