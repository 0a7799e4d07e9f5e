//! `users list|show|delete|set-roles|set-permissions`.
//!
//! `set-roles` and `set-permissions` send `PATCH /api/users/{name}` with
//! the one field they replace, and print the user the server returns.
//! Naming no role (or no permission) clears them, as the API does for an
//! empty list.

use http::Method;
use serde_json::{json, Value};

use crate::cli::{Format, UsersCommand};
use crate::client::{encode, Client};
use crate::output::{Table, Ui};
use crate::permission;
use crate::{CtlError, Outcome};

use super::{age, cell, list_pages, print_described, text};

const SHOW_ORDER: &[&str] = &[
    "username",
    "roles",
    "permissions",
    "origin",
    "hasPassword",
    "createdAt",
];

pub async fn run(client: &Client, ui: &Ui, cmd: UsersCommand) -> Result<Outcome, CtlError> {
    match cmd {
        UsersCommand::List(args) => {
            let mut path = "/api/users".to_owned();
            if let Some(prefix) = &args.prefix {
                path.push_str(&format!("?prefix={}", encode(prefix)));
            }
            let pages = list_pages(client, &path, args.limit).await?;
            match ui.format {
                Format::Json => {
                    for page in &pages {
                        ui.print_json(&page.reply.body)?;
                    }
                }
                Format::Name => ui.print_names(
                    pages
                        .iter()
                        .flat_map(|p| &p.items)
                        .map(|u| text(u, "username")),
                )?,
                Format::Table => {
                    let now = std::time::SystemTime::now();
                    let mut table =
                        Table::new(&["NAME", "ROLES", "PERMISSIONS", "ORIGIN", "PASSWORD", "AGE"])
                            .flexible(&["ROLES", "PERMISSIONS"]);
                    for user in pages.iter().flat_map(|p| &p.items) {
                        table.row([
                            text(user, "username").to_owned(),
                            cell(user, "roles"),
                            cell(user, "permissions"),
                            cell(user, "origin"),
                            cell(user, "hasPassword"),
                            age(user, "createdAt", now),
                        ]);
                    }
                    if table.is_empty() {
                        ui.note("no users");
                    } else {
                        ui.print_table(&table)?;
                    }
                }
            }
            Ok(Outcome::Success)
        }
        UsersCommand::Show(arg) => {
            let reply = client
                .get(&format!("/api/users/{}", encode(&arg.name)))
                .await?;
            show_user(ui, &reply.body, &reply.json()?)?;
            Ok(Outcome::Success)
        }
        UsersCommand::Delete(args) => {
            let mut failed = 0;
            for name in &args.names {
                let path = format!("/api/users/{}", encode(name));
                match client.call(Method::DELETE, &path, None).await?.success() {
                    Ok(_) => match ui.format {
                        Format::Json => {}
                        Format::Name => ui.print_names([name.as_str()])?,
                        Format::Table => {
                            ui.print_names([format!("user {name} deleted").as_str()])?
                        }
                    },
                    Err(e) => {
                        failed += 1;
                        ui.item_failed(&format!("delete user {name}: {e}"));
                    }
                }
            }
            Ok(Outcome::from_failures(failed))
        }
        UsersCommand::SetRoles(args) => {
            patch(client, ui, &args.name, json!({"roles": args.roles})).await
        }
        UsersCommand::SetPermissions(args) => {
            let permissions = permission::parse_all(&args.permissions)?;
            patch(client, ui, &args.name, json!({"permissions": permissions})).await
        }
    }
}

async fn patch(client: &Client, ui: &Ui, name: &str, body: Value) -> Result<Outcome, CtlError> {
    let path = format!("/api/users/{}", encode(name));
    let reply = client
        .call(Method::PATCH, &path, Some(&body))
        .await?
        .success()?;
    show_user(ui, &reply.body, &reply.json()?)?;
    Ok(Outcome::Success)
}

fn show_user(ui: &Ui, raw: &[u8], user: &Value) -> Result<(), CtlError> {
    match ui.format {
        Format::Json => ui.print_json(raw),
        Format::Name => ui.print_names([text(user, "username")]),
        Format::Table => print_described(ui, user, SHOW_ORDER),
    }
}
