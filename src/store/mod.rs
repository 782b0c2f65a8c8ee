//! The durable store: tenants, keys, numbers, scripts, contacts, calls and their CallEvents.
//!
//! One set of migrations (`migrations/`) and one set of queries serve SQLite (the embedded
//! default, `sqlite://data/voicegw.db`) and PostgreSQL (`postgres://…`), through sqlx's `Any`
//! driver. The SQL is portable: ids are UUID text, times are microseconds (BIGINT), JSON is
//! TEXT, placeholders are `$1, $2, …` (which SQLite also reads). The backend-specific code is in
//! [`Store::open_with`] (SQLite's folder creation, `mode=rwc`, WAL journal and
//! `synchronous = NORMAL`; PostgreSQL's typed pool for event ingestion) and in [`ingest`].
//!
//! Every read of tenant data takes a [`Scope`]; only [`Scope::Super`] crosses tenants.

pub mod call_plan;
pub mod call_records;
pub mod calls;
pub mod campaigns;
pub mod catalog;
pub mod control_events;
pub mod dial_jobs;
pub mod events;
pub mod hub;
pub mod ingest;
pub mod keys;
pub mod lifecycle;
pub mod readiness;
pub mod spool;
pub mod tenants;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The embedded default database.
pub const DEFAULT_URL: &str = "sqlite://data/voicegw.db";

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported database.
    #[error("unsupported database URL {0:?} (expected sqlite:… or postgres://…)")]
    UnsupportedUrl(String),
    /// The SQLite file's folder could not be created.
    #[error("cannot create the database folder {path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be reached or refused a statement.
    #[error("database error while {context}: {source}")]
    Db {
        /// What the store was doing.
        context: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value is not what the schema allows.
    #[error("corrupt stored value in {column}: {value:?}")]
    Corrupt {
        /// The column.
        column: &'static str,
        /// The value found.
        value: String,
    },
    /// The request is invalid (bad E.164, wrong role for a tenant, …).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The row does not exist in the caller's scope.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique value is already taken.
    #[error("{0} already exists")]
    Conflict(&'static str),
}

impl StoreError {
    /// Wraps a driver error with what was being done; unique violations become [`Conflict`].
    ///
    /// [`Conflict`]: StoreError::Conflict
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| match &source {
            sqlx::Error::Database(e) if e.is_unique_violation() => StoreError::Conflict(context),
            _ => StoreError::Db { context, source },
        }
    }
}

/// A query on the store's pool.
pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Which tenants a query may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's rows only.
    Tenant(TenantId),
    /// Every tenant (SUPERADMIN).
    Super,
}

impl Scope {
    /// `" AND <column> = $n"` for a tenant scope (binding `n` to the tenant), `""` for super.
    pub(crate) fn filter(&self, column: &str, n: usize) -> String {
        match self {
            Scope::Tenant(_) => format!(" AND {column} = ${n}"),
            Scope::Super => String::new(),
        }
    }

    /// Binds the tenant of [`Scope::filter`] (last), if any.
    pub(crate) fn bind<'q>(&self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        match self {
            Scope::Tenant(t) => query.bind(t.to_string()),
            Scope::Super => query,
        }
    }

    /// The tenant a tenant scope is limited to.
    pub fn tenant(&self) -> Option<String> {
        match self {
            Scope::Tenant(t) => Some(t.to_string()),
            Scope::Super => None,
        }
    }
}

/// A tenant's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TenantId(pub uuid::Uuid);

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses a stored UUID column.
pub(crate) fn parse_uuid(column: &'static str, value: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(value).map_err(|_| StoreError::Corrupt {
        column,
        value: value.to_string(),
    })
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The database family behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (embedded).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The family a URL names.
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(url.to_string()))
        }
    }
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Most connections in the pool.
    pub max_connections: u32,
    /// How long a query waits for a connection (an unreachable database fails after this).
    pub acquire_timeout: Duration,
    /// Run the migrations (and SQLite's set-up) now; `false` connects lazily and touches
    /// nothing until the first query.
    pub migrate: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            migrate: true,
        }
    }
}

/// A pool on SQLite or PostgreSQL with the typed repository functions.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// PostgreSQL only: the typed pool of [`Store::insert_events`].
    pg_ingest: Option<ingest::PgIngest>,
}

impl Store {
    /// Opens (creating and migrating when needed) the database at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, &OpenOptions::default()).await
    }

    /// Opens the database at `url` with `options`.
    ///
    /// SQLite connections to a WAL database run with `synchronous = NORMAL`: a commit no longer
    /// waits for an fsync of the WAL, yet stays durable if the application crashes; only a
    /// power loss or OS crash can lose the last commits (never corrupt the file). PostgreSQL
    /// commits as its server is configured.
    pub async fn open_with(url: &str, options: &OpenOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let url = match backend {
            Backend::Sqlite => sqlite_url(url, options.migrate)?,
            Backend::Postgres => url.to_string(),
        };
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout);
        if backend == Backend::Sqlite {
            pool_options = pool_options.after_connect(|conn, _| {
                Box::pin(async move { sqlite_wal_sync_normal(conn).await })
            });
        }
        let pool = if options.migrate {
            pool_options
                .connect(&url)
                .await
                .map_err(StoreError::db("connecting"))?
        } else {
            pool_options
                .connect_lazy(&url)
                .map_err(StoreError::db("connecting"))?
        };
        let pg_ingest = match backend {
            Backend::Postgres => Some(ingest::PgIngest::connect_lazy(
                &url,
                options.acquire_timeout,
            )?),
            Backend::Sqlite => None,
        };
        let store = Store {
            pool,
            backend,
            pg_ingest,
        };
        if options.migrate {
            if backend == Backend::Sqlite {
                // Persistent in the file: readers no longer wait on the writer. The
                // connection that turns it on was opened before, so it sets its own sync.
                let mut conn = store
                    .pool
                    .acquire()
                    .await
                    .map_err(StoreError::db("connecting"))?;
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&mut *conn)
                    .await
                    .map_err(StoreError::db("setting the WAL journal"))?;
                sqlite_wal_sync_normal(&mut conn)
                    .await
                    .map_err(StoreError::db("setting the WAL sync mode"))?;
            }
            MIGRATOR.run(&store.pool).await?;
        }
        Ok(store)
    }

    /// The database family.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for the repository modules.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The typed PostgreSQL pool for event ingestion, on PostgreSQL.
    pub(crate) fn pg_ingest(&self) -> Option<&ingest::PgIngest> {
        self.pg_ingest.as_ref()
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(pg) = &self.pg_ingest {
            pg.close().await;
        }
    }
}

/// On a SQLite connection to a WAL database, `PRAGMA synchronous = NORMAL` (see
/// [`Store::open_with`]); other journals keep SQLite's `FULL`.
async fn sqlite_wal_sync_normal(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await?;
    if mode.eq_ignore_ascii_case("wal") {
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A SQLite URL that creates the file (and, when `create`, its folder).
fn sqlite_url(url: &str, create: bool) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if create
        && !path.is_empty()
        && path != ":memory:"
        && let Some(parent) = Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::Folder {
            path: parent.display().to_string(),
            source,
        })?;
    }
    Ok(match query {
        Some(query) if query.contains("mode=") => url.to_string(),
        Some(_) => format!("{url}&mode=rwc"),
        None => format!("{url}?mode=rwc"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        assert_eq!(Backend::of_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::of_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(matches!(
            Backend::of_url("mysql://h/db"),
            Err(StoreError::UnsupportedUrl(_))
        ));
    }

    #[test]
    fn sqlite_urls_create_the_file() {
        assert_eq!(
            sqlite_url("sqlite://a.db", false).unwrap(),
            "sqlite://a.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url("sqlite://a.db?cache=shared", false).unwrap(),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            sqlite_url("sqlite://a.db?mode=ro", false).unwrap(),
            "sqlite://a.db?mode=ro"
        );
    }

    #[test]
    fn scope_filters_only_tenants() {
        let t = TenantId(uuid::Uuid::nil());
        assert_eq!(
            Scope::Tenant(t).filter("c.tenant_id", 3),
            " AND c.tenant_id = $3"
        );
        assert_eq!(Scope::Super.filter("c.tenant_id", 3), "");
        assert_eq!(Scope::Super.tenant(), None);
        assert_eq!(Scope::Tenant(t).tenant(), Some(t.to_string()));
    }
}
