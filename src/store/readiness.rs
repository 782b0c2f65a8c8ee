//! Starting without the database: whether the store is migrated and usable yet, and the
//! background task that keeps trying to migrate it.
//!
//! A gateway whose database is down at start still takes calls (their CallEvents are spooled,
//! see [`super::events`]); the control plane answers 503 until [`StoreReadiness::is_ready`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Backend, OpenOptions, Store, StoreError};

/// Whether the store has been reached and migrated. Clones share one flag.
#[derive(Debug, Clone, Default)]
pub struct StoreReadiness(Arc<AtomicBool>);

impl StoreReadiness {
    /// A store that is already usable.
    pub fn ready() -> StoreReadiness {
        let readiness = StoreReadiness::default();
        readiness.set_ready();
        readiness
    }

    /// Whether the store is usable.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Marks the store usable.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Whether `error` (from opening `url`) means the database could not be reached — worth
/// starting without it and retrying — rather than a setting to fix (a bad URL, a refused
/// password, a missing database, a failed migration). Only PostgreSQL is remote: a SQLite
/// file that cannot be opened is a local problem.
pub fn is_unreachable(url: &str, error: &StoreError) -> bool {
    if Backend::of_url(url).ok() != Some(Backend::Postgres) {
        return false;
    }
    let source = match error {
        StoreError::Db { source, .. } => source,
        StoreError::Migrate(sqlx::migrate::MigrateError::Execute(source)) => source,
        _ => return false,
    };
    matches!(
        source,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)
    )
}

/// Tries to open and migrate `url` every `every` until it works; returns once the database is
/// migrated (the pool used for it is closed).
pub async fn migrate_when_reachable(url: &str, every: Duration) {
    let options = OpenOptions {
        max_connections: 1,
        ..OpenOptions::default()
    };
    let mut attempts: u64 = 0;
    loop {
        attempts += 1;
        match Store::open_with(url, &options).await {
            Ok(store) => {
                store.close().await;
                tracing::info!(attempts, "database reachable again and migrated");
                return;
            }
            Err(error) => {
                tracing::error!(attempts, %error, "database still unreachable; retrying");
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_shared_by_clones() {
        let readiness = StoreReadiness::default();
        let clone = readiness.clone();
        assert!(!clone.is_ready());
        readiness.set_ready();
        assert!(clone.is_ready());
        assert!(StoreReadiness::ready().is_ready());
    }

    #[test]
    fn only_an_unreachable_postgres_is_waited_for() {
        let io = || StoreError::Db {
            context: "connecting",
            source: sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        assert!(is_unreachable("postgres://u@h/db", &io()));
        assert!(!is_unreachable("sqlite://x.db", &io()));
        let timed_out = StoreError::Db {
            context: "connecting",
            source: sqlx::Error::PoolTimedOut,
        };
        assert!(is_unreachable("postgresql://u@h/db", &timed_out));
        let config = StoreError::Db {
            context: "connecting",
            source: sqlx::Error::Configuration("bad".into()),
        };
        assert!(!is_unreachable("postgres://u@h/db", &config));
        assert!(!is_unreachable(
            "postgres://u@h/db",
            &StoreError::UnsupportedUrl("x".into())
        ));
    }
}
