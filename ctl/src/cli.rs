//! The command line: global connection flags, then `noun verb` commands.
//!
//! clap checks everything it can (unknown flags, missing arguments,
//! conflicting selectors, enum values) and exits with 2 on a mistake; the
//! commands add the few checks clap cannot express as
//! [`CtlError::Usage`](crate::CtlError::Usage), which is 2 as well.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The server a command talks to when neither `--server` nor
/// `FLEETGATE_SERVER` says otherwise: the admin listener's default address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8081";

/// fleetgate-ctl: administer a fleetgate gateway (registrations, users, roles).
#[derive(Debug, Parser)]
#[command(name = "fleetgate-ctl", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, before or after the verb.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The admin API's URL (http:// or https://).
    #[arg(long, global = true, env = "FLEETGATE_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Verify an https:// server against the CA certificates in this PEM
    /// file instead of the system's.
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Do not verify an https:// server's certificate at all.
    #[arg(long, global = true, conflicts_with = "cacert")]
    pub insecure: bool,
    /// The deadline of each call to the server (connect, send, answer).
    #[arg(long, global = true, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output format: an aligned table, the API's JSON, or names only.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `-o table|json|name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns that fit the terminal; device strings escaped.
    Table,
    /// Exactly what the API returned (one document per API answer).
    Json,
    /// One name per line, for `xargs`.
    Name,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in and store the token in $XDG_CONFIG_HOME/fleetgate/token (mode 0600).
    Login(LoginArgs),
    /// Show whether the registry is locked, until when, and how many requests wait.
    Status,
    /// Open the registry to new requests for a while.
    Unlock(UnlockArgs),
    /// Close the registry to new requests now.
    Lock,
    /// Registration requests: list, show, delete.
    #[command(subcommand)]
    Requests(RequestsCommand),
    /// Grant requests: by name, by prefix, every pending one, or names from a file.
    Grant(GrantArgs),
    /// Deny requests, with the same selectors as grant.
    Deny(DenyArgs),
    /// Users: list, show, delete, set their roles or permissions.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Roles: list, show, put (create or replace), delete.
    #[command(subcommand)]
    Roles(RolesCommand),
    /// Auto-approval rules: list, get, put (create or replace), delete, order.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// The audit log, oldest first: who did what, from where, with what result.
    Audit(AuditArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The user to log in as.
    #[arg(long, short = 'u', default_value = "admin")]
    pub username: String,
    /// Read the password from standard input (one line) instead of asking.
    #[arg(long)]
    pub password_stdin: bool,
    /// The token's lifetime in hours (the server allows 1 to 720).
    #[arg(long, value_name = "HOURS")]
    pub expire_hours: Option<u32>,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// How long the registry stays open (e.g. 90s, 5m, 1h; at most 24h).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// The states `requests list --state` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RequestState {
    Pending,
    Granted,
    Denied,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Granted => "granted",
            RequestState::Denied => "denied",
        }
    }
}

/// The transports a request can come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Http,
    Mqtt,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Mqtt => "mqtt",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// List requests (every page), newest state from the server.
    List(RequestsListArgs),
    /// Show one request.
    Show(NameArg),
    /// Forget pending or denied requests (the usernames are free again at once).
    Delete(NamesArg),
}

#[derive(Debug, Args)]
pub struct RequestsListArgs {
    /// Which requests to list.
    #[arg(long, value_enum, default_value_t = RequestState::Pending)]
    pub state: RequestState,
    /// Only usernames that start with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only requests that came over this transport.
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,
    /// Stop after this many requests (default: every page).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Keep listing: redraw on a terminal, or print new requests as they arrive.
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// How often --watch asks the server.
    #[arg(long, default_value = "2s", value_parser = parse_interval, requires = "watch")]
    pub interval: Duration,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Start this far back (1h, 30m, 7d) or at this RFC 3339 time in UTC
    /// (default: 24h).
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// Only records of this actor: an admin, a username a failed login
    /// tried, or `rule:<name>`.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only records about this username, role or rule.
    #[arg(long)]
    pub target: Option<String>,
    /// Stop after this many records (default: every page).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "follow")]
    pub limit: Option<u64>,
    /// Keep printing new records as they are written.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How often --follow asks the server.
    #[arg(long, default_value = "2s", value_parser = parse_interval, requires = "follow")]
    pub interval: Duration,
}

#[derive(Debug, Args)]
pub struct NameArg {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct NamesArg {
    #[arg(required = true, num_args = 1..)]
    pub names: Vec<String>,
}

/// What a grant or a deny decides on: exactly one of names (on the command
/// line or from a file), a prefix, every pending request, or pairing ids.
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("selection")
        .args(["names", "prefix", "all_pending", "file", "pairing_id"])
        .multiple(true)
        .required(true)
))]
pub struct Selection {
    /// The requests to decide, by username.
    #[arg(conflicts_with_all = ["prefix", "all_pending", "file"])]
    pub names: Vec<String>,
    /// Every pending request whose username starts with this.
    #[arg(long, conflicts_with_all = ["all_pending", "file"])]
    pub prefix: Option<String>,
    /// Every pending request.
    #[arg(long, conflicts_with = "file")]
    pub all_pending: bool,
    /// Usernames from a file, one a line (`-` reads standard input; blank
    /// lines and lines starting with `#` are skipped).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// With --prefix or --all-pending: only requests over this transport.
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,
    /// The pairing id the device shows. With one NAME, the decision is
    /// refused if the request's id differs; otherwise only requests with
    /// one of these ids are decided. Repeatable.
    #[arg(long = "pairing-id", value_name = "ID")]
    pub pairing_id: Vec<String>,
    /// List what would be decided, and decide nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Requests per API call (at most 10000); each call is one page of
    /// the progress bar.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub page_size: u64,
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// A role the new users get (it must be defined). Repeatable.
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// A permission the new users get, RESOURCE:OPERATION[:CONTEXT]
    /// (operation read|write|readWrite, context mqtt (default) or http).
    /// Repeatable.
    #[arg(long = "permission", value_name = "RESOURCE:OPERATION[:CONTEXT]")]
    pub permissions: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DenyArgs {
    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List users (every page).
    List(UsersListArgs),
    /// Show one user.
    Show(NameArg),
    /// Delete users: they can no longer log in, and their tokens stop working.
    Delete(NamesArg),
    /// Replace a user's roles (no ROLE: none).
    SetRoles(SetRolesArgs),
    /// Replace a user's direct permissions (no PERMISSION: none).
    SetPermissions(SetPermissionsArgs),
}

#[derive(Debug, Args)]
pub struct UsersListArgs {
    /// Only usernames that start with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Stop after this many users (default: every page).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SetRolesArgs {
    pub name: String,
    #[arg(value_name = "ROLE")]
    pub roles: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SetPermissionsArgs {
    pub name: String,
    /// RESOURCE:OPERATION[:CONTEXT], e.g. devices/{username}/#:readWrite
    #[arg(value_name = "PERMISSION")]
    pub permissions: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    /// List every role.
    List,
    /// Show one role.
    Show(NameArg),
    /// Create or replace a role with these permissions (none is allowed, except for admin).
    Put(RolePutArgs),
    /// Delete roles (users keep the name; it grants nothing until defined again).
    Delete(NamesArg),
}

#[derive(Debug, Args)]
pub struct RolePutArgs {
    pub name: String,
    /// RESOURCE:OPERATION[:CONTEXT], e.g. plant/+/temp:write
    #[arg(value_name = "PERMISSION")]
    pub permissions: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// List every rule, in evaluation order (the first match decides).
    List,
    /// Show one rule, with its use count.
    #[command(alias = "show")]
    Get(NameArg),
    /// Create (placed last) or replace (in place, uses kept) a rule.
    Put(RulePutArgs),
    /// Delete rules.
    Delete(NamesArg),
    /// Set the evaluation order: every rule's name, first match first.
    Order(NamesArg),
}

/// What `rules put` sends: each flag is one field of the rule.
#[derive(Debug, Args)]
pub struct RulePutArgs {
    pub name: String,
    /// What a matching rule does.
    #[arg(long, value_enum)]
    pub action: RuleActionArg,
    /// A regex the whole username must match (anchored), e.g. 'plant4-[0-9]+'.
    #[arg(long, value_name = "REGEX")]
    pub pattern: Option<String>,
    /// A source network the device must come from (IPv4 or IPv6); repeatable.
    #[arg(long = "cidr", value_name = "CIDR")]
    pub cidrs: Vec<String>,
    /// Match only this transport.
    #[arg(long, value_enum)]
    pub transport: Option<TransportArg>,
    /// Match only devices that sent a CSR.
    #[arg(long)]
    pub require_csr: bool,
    /// A role a granting rule gives; repeatable.
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// A permission a granting rule gives (RESOURCE:OPERATION[:CONTEXT]); repeatable.
    #[arg(long = "permission", value_name = "PERMISSION")]
    pub permissions: Vec<String>,
    /// How many devices the rule may decide.
    #[arg(long, value_name = "N")]
    pub max_uses: Option<u64>,
    /// When the rule stops matching (RFC 3339 in UTC, e.g. 2027-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub expires_at: Option<String>,
    /// Also decide while the registry is locked (preauthorization).
    #[arg(long)]
    pub while_locked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuleActionArg {
    Grant,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    Http,
    Mqtt,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells `completions` writes scripts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// A duration such as `90s`, `5m` or `1h30m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration (e.g. 90s, 5m): {e}"))
}

/// The fastest `--watch` may ask: a watch is a loop of listings, and an
/// operator's terminal needs no more than five a second.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(200);

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_WATCH_INTERVAL {
        return Err(format!(
            "the interval must be at least {}",
            humantime::format_duration(MIN_WATCH_INTERVAL)
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn watch_interval_is_capped_below() {
        assert!(parse_interval("199ms").is_err());
        assert_eq!(parse_interval("200ms").unwrap(), Duration::from_millis(200));
    }

    #[test]
    fn a_grant_needs_a_selection_and_one_kind_of_it() {
        let parse = |args: &[&str]| Cli::try_parse_from(args);
        assert!(parse(&["fleetgate-ctl", "grant"]).is_err());
        assert!(parse(&["fleetgate-ctl", "grant", "a", "--prefix", "b"]).is_err());
        assert!(parse(&["fleetgate-ctl", "grant", "--prefix", "b", "--all-pending"]).is_err());
        assert!(parse(&["fleetgate-ctl", "grant", "--pairing-id", "3fa9c1"]).is_ok());
        assert!(parse(&["fleetgate-ctl", "grant", "a", "b", "--role", "r"]).is_ok());
        // deny takes no roles or permissions.
        assert!(parse(&["fleetgate-ctl", "deny", "a", "--role", "r"]).is_err());
        let err = parse(&[
            "fleetgate-ctl",
            "grant",
            "--page-size",
            "10001",
            "--all-pending",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
