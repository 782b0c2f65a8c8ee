//! The operator's commands on the store: `voicegw tenants|keys|numbers …`. They call the same
//! store functions (and so the same checks) as the REST API, and print a plain table or, with
//! `--json`, the API's JSON. Exit codes: 0 done, 1 refused (the reason on stderr), 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;
use voicegw::config::{Config, Overrides};
use voicegw::control::model::{self, ApiKeyList, PhoneNumberList, TenantList};
use voicegw::store::catalog::{Carrier, MAX_PAGE, NewNumber};
use voicegw::store::tenants::{Plan, Role};
use voicegw::store::{Scope, Store, StoreError, TenantId};

use crate::StoreArgs;

/// Where the store is and how to print.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The database.
    #[command(flatten)]
    store: StoreArgs,
    /// A TOML config file (its `[store] url` is used unless --database-url is given).
    #[arg(long, env = "VOICEGW_CONFIG")]
    config: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn plan(label: &str) -> Result<Plan, String> {
    Plan::from_label(label).map_err(|e| e.message)
}

fn role(label: &str) -> Result<Role, String> {
    Role::from_label(label).map_err(|e| e.message)
}

fn carrier(label: &str) -> Result<Carrier, String> {
    Carrier::parse(label).map_err(|e| e.message)
}

/// `voicegw tenants …`.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant.
    Create {
        /// Display name.
        name: String,
        /// OUTBOUND, INBOUND or FULL.
        #[arg(long, default_value = "FULL", value_parser = plan)]
        plan: Plan,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List every tenant.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `voicegw keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print its secret (shown this once).
    Create {
        /// The key's tenant (none for SUPERADMIN keys).
        #[arg(long)]
        tenant: Option<uuid::Uuid>,
        /// AGENT, ADMIN or SUPERADMIN.
        #[arg(long, value_parser = role)]
        role: Role,
        /// A label.
        #[arg(long, default_value = "operator")]
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List keys (revoked ones too), of one tenant or all.
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<uuid::Uuid>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a key: it is refused from now on.
    Revoke {
        /// The key's id.
        id: uuid::Uuid,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `voicegw numbers …`.
#[derive(Debug, Subcommand)]
pub enum NumbersCommand {
    /// Add a phone number to a tenant.
    Add {
        /// The number, E.164 (e.g. +14155550100).
        e164: String,
        /// The tenant.
        #[arg(long)]
        tenant: uuid::Uuid,
        /// twilio or exotel.
        #[arg(long, default_value = "twilio", value_parser = carrier)]
        carrier: Carrier,
        /// A script of the tenant that inbound calls run.
        #[arg(long)]
        script: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List numbers, of one tenant or all.
    List {
        /// Only this tenant's numbers.
        #[arg(long)]
        tenant: Option<uuid::Uuid>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Why a command did not complete.
enum Failure {
    /// Bad configuration: exit 2.
    Usage(String),
    /// The store refused or failed: exit 1.
    Refused(String),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Refused(error.to_string())
    }
}

/// What a command prints: a table, or the JSON.
struct Output {
    json: serde_json::Value,
    table: String,
}

impl Output {
    fn new(json: &impl Serialize, headers: &[&str], rows: Vec<Vec<String>>) -> Output {
        Output {
            json: serde_json::to_value(json).unwrap_or_default(),
            table: table(headers, &rows),
        }
    }
}

/// Columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Runs one command on the store and prints its result.
fn run<F>(admin: AdminArgs, command: F) -> ExitCode
where
    F: AsyncFnOnce(&Store) -> Result<Output, Failure>,
{
    let json = admin.json;
    let result = (|| {
        let overrides = Overrides {
            database_url: admin.store.database_url,
            ..Overrides::default()
        };
        let config = Config::load(admin.config.as_deref(), &overrides)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::Refused(format!("cannot start the runtime: {e}")))?;
        runtime.block_on(async {
            let store = Store::open(&config.store.url).await?;
            let output = command(&store).await;
            store.close().await;
            output
        })
    })();
    match result {
        Ok(output) => {
            if json {
                println!("{}", output.json);
            } else {
                print!("{}", output.table);
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            eprintln!("voicegw: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Refused(message)) => {
            eprintln!("voicegw: refused: {message}");
            ExitCode::from(1)
        }
    }
}

fn scope_of(tenant: Option<uuid::Uuid>) -> Scope {
    tenant.map_or(Scope::Super, |t| Scope::Tenant(TenantId(t)))
}

fn tenant_rows(tenants: &[model::Tenant]) -> Vec<Vec<String>> {
    tenants
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                t.plan.clone(),
                t.created_at.clone(),
            ]
        })
        .collect()
}

const TENANT_HEADERS: [&str; 4] = ["ID", "NAME", "PLAN", "CREATED"];

/// `voicegw tenants …`.
pub fn tenants(command: TenantsCommand) -> ExitCode {
    match command {
        TenantsCommand::Create { name, plan, admin } => run(admin, async move |store| {
            let tenant = model::Tenant::from(&store.create_tenant(&name, plan).await?);
            let rows = tenant_rows(std::slice::from_ref(&tenant));
            Ok(Output::new(&tenant, &TENANT_HEADERS, rows))
        }),
        TenantsCommand::List { admin } => run(admin, async |store| {
            let tenants: Vec<model::Tenant> = store
                .list_tenants(Scope::Super)
                .await?
                .iter()
                .map(model::Tenant::from)
                .collect();
            let rows = tenant_rows(&tenants);
            Ok(Output::new(&TenantList { tenants }, &TENANT_HEADERS, rows))
        }),
    }
}

fn key_rows(keys: &[model::ApiKey]) -> Vec<Vec<String>> {
    keys.iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.tenant_id.clone().unwrap_or_else(|| "-".into()),
                k.role.clone(),
                k.name.clone(),
                k.prefix.clone(),
                k.created_at.clone(),
                k.revoked_at.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

const KEY_HEADERS: [&str; 7] = [
    "ID", "TENANT", "ROLE", "NAME", "PREFIX", "CREATED", "REVOKED",
];

/// `voicegw keys …`.
pub fn keys(command: KeysCommand) -> ExitCode {
    match command {
        KeysCommand::Create {
            tenant,
            role,
            name,
            admin,
        } => run(admin, async move |store| {
            let (key, secret) = store
                .create_api_key(tenant.map(TenantId), role, &name)
                .await?;
            let mut shown = model::ApiKey::from(&key);
            shown.secret = Some(secret.clone());
            let mut output = Output::new(&shown, &KEY_HEADERS, key_rows(&[shown.clone()]));
            output
                .table
                .push_str(&format!("\nsecret (shown once, not stored): {secret}\n"));
            Ok(output)
        }),
        KeysCommand::List { tenant, admin } => run(admin, async move |store| {
            let scope = scope_of(tenant);
            let keys = every_page(
                |after| store.list_api_keys_page(scope, after, MAX_PAGE),
                |k| k.id,
                |k| model::ApiKey::from(k),
            )
            .await?;
            let rows = key_rows(&keys);
            let list = ApiKeyList {
                keys,
                next_cursor: None,
            };
            Ok(Output::new(&list, &KEY_HEADERS, rows))
        }),
        KeysCommand::Revoke { id, admin } => run(admin, async move |store| {
            store.revoke_api_key(Scope::Super, id).await?;
            let key = store
                .get_api_key(Scope::Super, id)
                .await?
                .ok_or(StoreError::NotFound("API key"))?;
            let key = model::ApiKey::from(&key);
            let rows = key_rows(std::slice::from_ref(&key));
            Ok(Output::new(&key, &KEY_HEADERS, rows))
        }),
    }
}

/// Every row of a listing read [`MAX_PAGE`] at a time: `page(after)` gives the rows after
/// the id `after`, `id` names a row, `show` turns it into what is printed.
async fn every_page<R, T, Fut>(
    mut page: impl FnMut(Option<uuid::Uuid>) -> Fut,
    id: fn(&R) -> uuid::Uuid,
    show: fn(&R) -> T,
) -> Result<Vec<T>, StoreError>
where
    Fut: std::future::Future<Output = Result<Vec<R>, StoreError>>,
{
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let batch = page(after).await?;
        after = batch.last().map(id);
        let full = batch.len() == MAX_PAGE as usize;
        rows.extend(batch.iter().map(show));
        if !full {
            return Ok(rows);
        }
    }
}

fn number_rows(numbers: &[model::PhoneNumber]) -> Vec<Vec<String>> {
    numbers
        .iter()
        .map(|n| {
            vec![
                n.id.clone(),
                n.tenant_id.clone(),
                n.e164.clone(),
                n.carrier.clone(),
                n.script.clone().unwrap_or_else(|| "-".into()),
                n.created_at.clone(),
            ]
        })
        .collect()
}

const NUMBER_HEADERS: [&str; 6] = ["ID", "TENANT", "E164", "CARRIER", "SCRIPT", "CREATED"];

/// `voicegw numbers …`.
pub fn numbers(command: NumbersCommand) -> ExitCode {
    match command {
        NumbersCommand::Add {
            e164,
            tenant,
            carrier,
            script,
            admin,
        } => run(admin, async move |store| {
            let new = NewNumber {
                e164: &e164,
                carrier: carrier.as_str(),
                script: script.as_deref(),
            };
            let number = model::PhoneNumber::from(&store.add_number(TenantId(tenant), new).await?);
            let rows = number_rows(std::slice::from_ref(&number));
            Ok(Output::new(&number, &NUMBER_HEADERS, rows))
        }),
        NumbersCommand::List { tenant, admin } => run(admin, async move |store| {
            let scope = scope_of(tenant);
            let numbers = every_page(
                |after| store.list_numbers(scope, after, MAX_PAGE),
                |n| n.id,
                |n| model::PhoneNumber::from(n),
            )
            .await?;
            let rows = number_rows(&numbers);
            let list = PhoneNumberList {
                numbers,
                next_cursor: None,
            };
            Ok(Output::new(&list, &NUMBER_HEADERS, rows))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns() {
        let out = table(
            &["ID", "NAME"],
            &[
                vec!["1".into(), "acme".into()],
                vec!["22".into(), "b".into()],
            ],
        );
        assert_eq!(out, "ID  NAME\n1   acme\n22  b\n");
    }
}
