//! Recording audit entries from the registry: the one path every record
//! takes, whoever made it (the admin service for admin actions, the rules
//! of `registry::rules` for decisions on the device path).
//!
//! [`Registry::audit`] writes the entries to the store
//! ([`Store::append_audit`], which evicts past `--audit-max-records`), and
//! then queues the stored records for the `--audit-log` file, if any. It
//! never fails its caller: the action it records has already happened, so
//! a store that cannot keep the record is an error log line and
//! `fleetgate_audit_records_total{result="failed"}`, and the file still
//! gets the line (without an `id`).

use crate::audit::{AuditConfig, AuditEntry, AuditFile, AuditPage, AuditQuery};
use crate::clock::UnixMillis;
use crate::metrics::AUDIT_RECORDS_TOTAL;
use crate::store::{Store, StoreError};

use super::Registry;

impl<S: Store> Registry<S> {
    /// Sets the audit cap and retention (default [`AuditConfig::default`]).
    pub fn with_audit(mut self, config: AuditConfig) -> Self {
        self.audit = config;
        self
    }

    /// Also appends every record to the `--audit-log` file.
    pub fn with_audit_file(mut self, file: AuditFile) -> Self {
        self.audit_file = Some(file);
        self
    }

    pub fn audit_config(&self) -> AuditConfig {
        self.audit
    }

    /// Records `entries`, in order. See the module docs: never fails.
    pub async fn audit(&self, entries: Vec<AuditEntry>) {
        if entries.is_empty() {
            return;
        }
        let n = entries.len() as u64;
        let copy = self.audit_file.as_ref().map(|_| entries.clone());
        match self
            .store
            .append_audit(entries, self.audit.max_records)
            .await
        {
            Ok(records) => self.audit_stored(&records),
            Err(e) => {
                metrics::counter!(AUDIT_RECORDS_TOTAL, "result" => "failed").increment(n);
                tracing::error!(error = %e, records = n, "audit records not stored");
                if let (Some(file), Some(entries)) = (&self.audit_file, copy) {
                    let views: Vec<_> = entries.iter().map(|e| e.view(None)).collect();
                    file.write(&views);
                }
            }
        }
    }

    /// What follows records the store has kept, however they got there
    /// ([`Self::audit`], or with a grant: `Registry::grant_audited`): the
    /// metric, and the `--audit-log` file's lines.
    pub(crate) fn audit_stored(&self, records: &[crate::audit::AuditRecord]) {
        metrics::counter!(AUDIT_RECORDS_TOTAL, "result" => "stored")
            .increment(records.len() as u64);
        if let Some(file) = &self.audit_file {
            let views: Vec<_> = records.iter().map(|r| r.view()).collect();
            file.write(&views);
        }
    }

    /// A page of the audit log.
    pub async fn list_audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        self.store.list_audit(query).await
    }

    /// Drops records past `--audit-retention` (the sweeper calls this).
    pub async fn prune_audit(&self, now: UnixMillis) -> Result<usize, StoreError> {
        let before =
            UnixMillis(now.0.saturating_sub(
                u64::try_from(self.audit.retention.as_millis()).unwrap_or(u64::MAX),
            ));
        self.store.prune_audit(before).await
    }
}
