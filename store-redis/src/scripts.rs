//! The Lua scripts that make each state transition atomic, and the
//! `EVALSHA` commands that call them.
//!
//! Redis runs a script to completion before serving anything else, so a
//! read-decide-write inside one script is a transaction. Each script touches
//! the keys of one bucket only (see [`crate::keys`]), which keeps it valid on
//! Redis Cluster. The sources live in `src/lua/`; each is prefixed with
//! `prelude.lua`, which holds the shared helpers (expiry rule, sweeps).
//!
//! Scripts are loaded with `SCRIPT LOAD` when the store connects (on a
//! cluster, on every master) and called by SHA1. A server that lost its
//! script cache (restart, failover to a replica, `SCRIPT FLUSH`) answers
//! `NOSCRIPT`; the store then loads every script again and retries the call
//! once (see `conn::Conn::eval`).

use redis::{Cmd, Script};

const PRELUDE: &str = include_str!("lua/prelude.lua");

/// One script: its name (for errors) and its source with the prelude.
#[derive(Debug)]
pub struct Lua {
    pub name: &'static str,
    script: Script,
    source: String,
}

impl Lua {
    fn new(name: &'static str, body: &str) -> Self {
        let source = format!("{PRELUDE}\n{body}");
        Lua {
            name,
            script: Script::new(&source),
            source,
        }
    }

    /// `EVALSHA <sha1> <numkeys> <keys...>`; the caller appends the ARGV.
    pub fn evalsha(&self, keys: &[&str]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(keys.len()).arg(keys);
        cmd
    }

    /// `SCRIPT LOAD <source>`.
    pub fn load_cmd(&self) -> Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(&self.source);
        cmd
    }
}

/// Every script the store uses.
#[derive(Debug)]
pub struct Scripts {
    pub register: Lua,
    pub grant: Lua,
    pub deny: Lua,
    pub forget: Lua,
    pub put_user: Lua,
    pub cas_user: Lua,
    pub delete_user: Lua,
    pub put_role: Lua,
    pub delete_role: Lua,
    pub put_rule: Lua,
    pub delete_rule: Lua,
    pub rule_order: Lua,
    pub claim_rule: Lua,
    pub list: Lua,
    pub sweep: Lua,
    pub reserve: Lua,
    pub release: Lua,
    pub set_lock: Lua,
    pub audit_append: Lua,
    pub outbox_ack: Lua,
    pub lock_expire: Lua,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            register: Lua::new("register", include_str!("lua/register.lua")),
            grant: Lua::new("grant", include_str!("lua/grant.lua")),
            deny: Lua::new("deny", include_str!("lua/deny.lua")),
            forget: Lua::new("forget", include_str!("lua/forget.lua")),
            put_user: Lua::new("put_user", include_str!("lua/put_user.lua")),
            cas_user: Lua::new("cas_user", include_str!("lua/cas_user.lua")),
            delete_user: Lua::new("delete_user", include_str!("lua/delete_user.lua")),
            put_role: Lua::new("put_role", include_str!("lua/put_role.lua")),
            delete_role: Lua::new("delete_role", include_str!("lua/delete_role.lua")),
            put_rule: Lua::new("put_rule", include_str!("lua/put_rule.lua")),
            delete_rule: Lua::new("delete_rule", include_str!("lua/delete_rule.lua")),
            rule_order: Lua::new("rule_order", include_str!("lua/rule_order.lua")),
            claim_rule: Lua::new("claim_rule", include_str!("lua/claim_rule.lua")),
            list: Lua::new("list", include_str!("lua/list.lua")),
            sweep: Lua::new("sweep", include_str!("lua/sweep.lua")),
            reserve: Lua::new("reserve", include_str!("lua/reserve.lua")),
            release: Lua::new("release", include_str!("lua/release.lua")),
            set_lock: Lua::new("set_lock", include_str!("lua/set_lock.lua")),
            audit_append: Lua::new("audit_append", include_str!("lua/audit_append.lua")),
            outbox_ack: Lua::new("outbox_ack", include_str!("lua/outbox_ack.lua")),
            lock_expire: Lua::new("lock_expire", include_str!("lua/lock_expire.lua")),
        }
    }

    pub fn all(&self) -> [&Lua; 21] {
        [
            &self.register,
            &self.grant,
            &self.deny,
            &self.forget,
            &self.put_user,
            &self.cas_user,
            &self.delete_user,
            &self.put_role,
            &self.delete_role,
            &self.put_rule,
            &self.delete_rule,
            &self.rule_order,
            &self.claim_rule,
            &self.list,
            &self.sweep,
            &self.reserve,
            &self.release,
            &self.set_lock,
            &self.audit_append,
            &self.outbox_ack,
            &self.lock_expire,
        ]
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
