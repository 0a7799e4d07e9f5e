//! `fleetgate-ctl`, the command-line client of fleetgate's admin API.
//!
//! The gateway's admin service (`fleetgate-admin`, or the admin listener of
//! the all-in-one `fleetgate`) answers JSON over HTTP. This crate turns that
//! API into verbs an operator types, in the shape of `kubectl certificate
//! approve|deny` and the headscale CLI: `noun verb`, `-o table|json|name`,
//! exit codes 0 (success), 1 (an item or a call failed, named on stderr) and
//! 2 (usage). It depends on no other fleetgate crate: the JSON is the
//! contract (docs/API.md), read with `serde_json`.
//!
//! # Layout
//! - [`cli`]: the command line (clap derive), one type per verb.
//! - [`client`]: the HTTP(S) client (hyper-util over hyper-rustls), with a
//!   deadline on every call and a cap on every answer.
//! - [`token`]: the token file `$XDG_CONFIG_HOME/fleetgate/token` (mode
//!   0600) and `FLEETGATE_TOKEN`.
//! - [`permission`]: `RESOURCE:OPERATION[:CONTEXT]` arguments.
//! - [`output`]: tables that fit the terminal, escaping of device-supplied
//!   strings, and the `-o` formats.
//! - [`progress`]: the progress bar of a bulk decision (on a terminal only).
//! - [`commands`]: what each verb does with the API.
//! - [`error`]: [`CtlError`], and which exit code each error means.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod output;
pub mod permission;
pub mod progress;
pub mod token;

pub use error::CtlError;

/// What a command that ran to its end reports: every item succeeded, or
/// some failed (each already named on stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    SomeFailed,
}

impl Outcome {
    /// The exit code of this outcome: 0 or 1.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::SomeFailed => 1,
        }
    }

    /// `SomeFailed` when any of `failed` is true.
    pub fn from_failures(failed: usize) -> Outcome {
        if failed == 0 {
            Outcome::Success
        } else {
            Outcome::SomeFailed
        }
    }
}
