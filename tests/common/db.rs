//! A fresh, migrated store per test on SQLite (a temp file) or PostgreSQL (a database of its
//! own, `voicegw_t_<uuid>`, dropped at the end), for tests that run on both backends.

use sqlx::Connection;
use tempfile::TempDir;
use voicegw::store::Store;

/// The server the PostgreSQL tests use (a database there to connect to first).
pub fn pg_admin_url() -> String {
    std::env::var("VOICEGW_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh, migrated store and what it needs to live.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    pub dir: TempDir,
    /// The PostgreSQL database's name (dropped with the value), `None` on SQLite.
    pub pg_name: Option<String>,
}

impl TestDb {
    /// A SQLite database in a temp folder.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/dir/voicegw.db", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        TestDb {
            store,
            url,
            dir,
            pg_name: None,
        }
    }

    /// A PostgreSQL database of its own.
    pub async fn postgres() -> TestDb {
        let admin = pg_admin_url();
        let name = format!("voicegw_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("bad VOICEGW_TEST_PG_URL {admin}"),
        };
        let store = Store::open(&url).await.unwrap();
        TestDb {
            store,
            url,
            dir: tempfile::tempdir().unwrap(),
            pg_name: Some(name),
        }
    }

    /// Whether this is the PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.pg_name.is_some()
    }

    /// A spool path in the test's folder.
    pub fn spool(&self) -> std::path::PathBuf {
        self.dir.path().join("spool/events.jsonl")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = pg_admin_url();
            // Drop runs outside any async context's reach: a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Runs one async body `fn(TestDb)` as two tests, `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::common::db::TestDb::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::common::db::TestDb::postgres().await).await;
            }
        }
    };
}
