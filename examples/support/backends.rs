//! The examples' two backends: a run on SQLite, then on a scratch PostgreSQL database created
//! on the server of `VOICEGW_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//! and dropped afterwards. PostgreSQL is skipped, with a line saying why, when the server
//! cannot be reached.

use std::process::ExitCode;

use sqlx::Connection;

/// Runs `run(label, database_url)` on SQLite (`sqlite_url`), then, unless `sqlite_only`, on a
/// scratch PostgreSQL database; errors are printed prefixed with `tool`.
pub async fn on_both(
    tool: &str,
    sqlite_url: &str,
    sqlite_only: bool,
    run: impl AsyncFn(&str, &str) -> Result<(), String>,
) -> ExitCode {
    if let Err(error) = run("SQLite", sqlite_url).await {
        eprintln!("{tool}: SQLite: {error}");
        return ExitCode::FAILURE;
    }
    if sqlite_only {
        return ExitCode::SUCCESS;
    }
    let admin = std::env::var("VOICEGW_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let name = format!("voicegw_bench_{}", uuid::Uuid::new_v4().simple());
    let Some((server, _)) = admin.rsplit_once('/') else {
        eprintln!("{tool}: bad VOICEGW_TEST_PG_URL {admin}");
        return ExitCode::FAILURE;
    };
    let create = async {
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await
    };
    if let Err(error) = create.await {
        eprintln!("{tool}: PostgreSQL unavailable ({error}); skipped");
        return ExitCode::SUCCESS;
    }
    let result = run("PostgreSQL", &format!("{server}/{name}")).await;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{tool}: PostgreSQL: {error}");
            ExitCode::FAILURE
        }
    }
}
