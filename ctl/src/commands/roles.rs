//! `roles list|show|put|delete`.
//!
//! `roles put NAME PERMISSION...` creates or replaces the role with exactly
//! those permissions (`PUT /api/roles/{name}`), and prints the role the
//! server stored.

use http::Method;
use serde_json::{json, Value};

use crate::cli::{Format, RolesCommand};
use crate::client::{encode, Client};
use crate::output::{Table, Ui};
use crate::permission;
use crate::{CtlError, Outcome};

use super::{cell, print_described, text};

pub async fn run(client: &Client, ui: &Ui, cmd: RolesCommand) -> Result<Outcome, CtlError> {
    match cmd {
        RolesCommand::List => {
            let reply = client.get("/api/roles").await?;
            let answer = reply.json()?;
            let items = answer
                .get("items")
                .and_then(Value::as_array)
                .ok_or_else(|| CtlError::BadReply("the roles answer has no `items`".into()))?;
            match ui.format {
                Format::Json => ui.print_json(&reply.body)?,
                Format::Name => ui.print_names(items.iter().map(|r| text(r, "name")))?,
                Format::Table => {
                    let mut table = Table::new(&["NAME", "PERMISSIONS"]).flexible(&["PERMISSIONS"]);
                    for role in items {
                        table.row([text(role, "name").to_owned(), cell(role, "permissions")]);
                    }
                    ui.print_table(&table)?;
                }
            }
            Ok(Outcome::Success)
        }
        RolesCommand::Show(arg) => {
            let reply = client
                .get(&format!("/api/roles/{}", encode(&arg.name)))
                .await?;
            show_role(ui, &reply.body, &reply.json()?)?;
            Ok(Outcome::Success)
        }
        RolesCommand::Put(args) => {
            let permissions = permission::parse_all(&args.permissions)?;
            let path = format!("/api/roles/{}", encode(&args.name));
            let reply = client
                .call(
                    Method::PUT,
                    &path,
                    Some(&json!({"permissions": permissions})),
                )
                .await?
                .success()?;
            show_role(ui, &reply.body, &reply.json()?)?;
            Ok(Outcome::Success)
        }
        RolesCommand::Delete(args) => {
            let mut failed = 0;
            for name in &args.names {
                let path = format!("/api/roles/{}", encode(name));
                match client.call(Method::DELETE, &path, None).await?.success() {
                    Ok(_) => match ui.format {
                        Format::Json => {}
                        Format::Name => ui.print_names([name.as_str()])?,
                        Format::Table => {
                            ui.print_names([format!("role {name} deleted").as_str()])?
                        }
                    },
                    Err(e) => {
                        failed += 1;
                        ui.item_failed(&format!("delete role {name}: {e}"));
                    }
                }
            }
            Ok(Outcome::from_failures(failed))
        }
    }
}

fn show_role(ui: &Ui, raw: &[u8], role: &Value) -> Result<(), CtlError> {
    match ui.format {
        Format::Json => ui.print_json(raw),
        Format::Name => ui.print_names([text(role, "name")]),
        Format::Table => print_described(ui, role, &["name", "permissions"]),
    }
}
