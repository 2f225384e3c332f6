//! Every change of a job's or a lane's state, one file each: the transition's PL/pgSQL
//! function (`<name>.sql`, in the database schema `transitions`) and its Rust call
//! (`<name>.rs`). Each is one round trip, guarded by the state it expects and, for a leased
//! job, by the fencing token; each uses the database's clock; each answers with an
//! [`Outcome`], turned into the one [`Error`] type here. `support.sql` holds what they share
//! (counters, lane bookkeeping, the lease grant); `check.sql` verifies that lanes and
//! counters agree with the jobs.
//!
//! The functions are code, not schema: [`install`] replaces them as a whole when their text
//! changes (a new release), so each has exactly one definition, here. Their signatures are an
//! interface between releases (an old replica keeps calling them during a rolling deploy):
//! change one by adding a new name. Each released set has a serial ([`CODE_SERIAL`]), and a
//! set is never replaced by an older one: an old replica restarting mid-deploy keeps the new
//! set. Changing a `.sql` file here means raising the serial (a unit test says so).
//!
//! Must never: change a job or lane row outside these functions.

pub mod bulk;
pub mod cancel;
pub mod check;
pub mod complete;
pub mod complete_and_lease;
pub mod enqueue;
pub mod expire;
pub mod fail;
pub mod heartbeat;
pub mod lease;
pub mod promote;
pub mod purge;
pub mod retry;
pub mod unblock;

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// How a guarded transition ended; mirrors `CREATE TYPE transition_outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "transition_outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// Applied by this call.
    Done,
    /// Already applied by this same request or holder (its reply was lost): nothing changed,
    /// and the caller answers as it did the first time.
    Repeated,
    /// The fencing token no longer holds the job: nothing changed.
    Stale,
    /// No such job (or lane).
    Missing,
    /// The job is in a state this transition does not apply to: nothing changed.
    Refused,
}

impl Outcome {
    /// `Ok(true)` when applied now, `Ok(false)` for a repeat; the error of a report whose
    /// token does not hold job `id` otherwise (`Refused` explained by `refused`).
    pub fn of_report(self, id: i64, token: i64, refused: &str) -> Result<bool> {
        match self {
            Outcome::Done => Ok(true),
            Outcome::Repeated => Ok(false),
            Outcome::Stale => Err(Error::stale_token(id, token)),
            Outcome::Missing => Err(Error::job_not_found(id)),
            Outcome::Refused => Err(Error::Precondition(refused.to_owned())),
        }
    }
}

/// The function files, in the order they are installed (all PL/pgSQL or SQL functions that
/// only name tables and types, so any order works; this one reads well).
const CODE: &[(&str, &str)] = &[
    ("support", include_str!("support.sql")),
    ("outbox", include_str!("outbox.sql")),
    ("events", include_str!("events.sql")),
    ("enqueue", include_str!("enqueue.sql")),
    ("lease", include_str!("lease.sql")),
    ("heartbeat", include_str!("heartbeat.sql")),
    ("complete", include_str!("complete.sql")),
    ("complete_and_lease", include_str!("complete_and_lease.sql")),
    ("fail", include_str!("fail.sql")),
    ("expire", include_str!("expire.sql")),
    ("promote", include_str!("promote.sql")),
    ("cancel", include_str!("cancel.sql")),
    ("retry", include_str!("retry.sql")),
    ("unblock", include_str!("unblock.sql")),
    ("purge", include_str!("purge.sql")),
    ("check", include_str!("check.sql")),
    ("stats", include_str!("stats.sql")),
];

/// The release order of these function files: raise it with any change to them, and set
/// [`CODE_HASH`] to the hash the unit test `the_serial_names_this_code` prints (its `left`).
pub const CODE_SERIAL: i64 = 2;

/// The hash of the files at [`CODE_SERIAL`].
#[cfg(test)]
const CODE_HASH: &str = "f790bdaa71de7db852dd453f918acc8b79b87294aa6c1e4060ab72d6266b2f51";

/// Advisory lock of the install ("LANESFNS"): replicas starting together install once.
const INSTALL_LOCK: i64 = 0x4c41_4e45_5346_4e53;

/// The hash of the function files, which names the installed version.
fn code_hash() -> String {
    let mut h = Sha256::new();
    for (name, text) in CODE {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Installs the transition functions unless this very version, or a newer release's (a
/// higher serial), is installed already: drops the schema `transitions` and creates it anew
/// from the files, in one transaction (a concurrent call waits, then finds the version
/// installed).
pub async fn install(pool: &PgPool) -> Result<()> {
    let hash = code_hash();
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", INSTALL_LOCK)
        .execute(&mut *tx)
        .await?;
    let installed = sqlx::query!("SELECT hash, serial FROM transitions_code WHERE id = 1")
        .fetch_optional(&mut *tx)
        .await?;
    match installed {
        Some(i) if i.hash == hash => return Ok(()),
        Some(i) if i.serial > CODE_SERIAL => {
            tracing::info!(
                installed = i.serial,
                ours = CODE_SERIAL,
                "a newer release's transition functions are installed; keeping them"
            );
            return Ok(());
        }
        _ => {}
    }
    sqlx::raw_sql("DROP SCHEMA IF EXISTS transitions CASCADE; CREATE SCHEMA transitions")
        .execute(&mut *tx)
        .await?;
    for (name, text) in CODE {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*text))
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::Setup(format!("installing transitions/{name}.sql: {e}")))?;
    }
    sqlx::query!(
        "INSERT INTO transitions_code (id, hash, serial) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE
         SET hash = EXCLUDED.hash, serial = EXCLUDED.serial, installed_at = now()",
        hash,
        CODE_SERIAL
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(version = &hash[..12], "transition functions installed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An edited function file with the old serial would be installed, and then replaced by
    /// an older release's set at its next start (or kept over a newer one): the serial must
    /// move with the text.
    #[test]
    fn the_serial_names_this_code() {
        assert_eq!(
            code_hash(),
            CODE_HASH,
            "the transition functions changed: raise CODE_SERIAL (now {CODE_SERIAL}) and set \
             CODE_HASH to the new hash"
        );
    }
}
