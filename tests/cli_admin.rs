//! `voicegw tenants|keys|numbers` run as the built binary on a temp SQLite database: tables by
//! default, the API's JSON with `--json`, the store's checks (exit 1 with the reason) and usage
//! errors (exit 2).

use std::process::Command;

use serde_json::Value;
use voicegw::store::Store;
use voicegw::store::tenants::Role;

struct Cli {
    url: String,
    _dir: tempfile::TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

impl Cli {
    fn new() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/admin.db", dir.path().display());
        Cli { url, _dir: dir }
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_voicegw"))
            .args(args)
            .env("VOICEGW_DATABASE_URL", &self.url)
            .env_remove("VOICEGW_CONFIG")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn store(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }
}

fn keys_of(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn tenants_and_keys() {
    let cli = Cli::new();
    let made = cli.run(&["tenants", "create", "Acme Inc", "--plan", "inbound"]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let header = made.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("PLAN"),
        "{}",
        made.stdout
    );
    assert!(made.stdout.contains("Acme Inc") && made.stdout.contains("INBOUND"));

    let other = cli.run(&["tenants", "create", "Globex", "--json"]).json();
    assert_eq!(keys_of(&other), ["created_at", "id", "name", "plan"]);
    assert_eq!(other["plan"], "FULL");
    let list = cli.run(&["tenants", "list", "--json"]).json();
    let tenants = list["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 2);
    let acme = tenants[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(tenants[1], other);

    // A key: the secret shown once, and it works.
    let key = cli
        .run(&[
            "keys", "create", "--tenant", &acme, "--role", "admin", "--name", "ops", "--json",
        ])
        .json();
    let secret = key["secret"].as_str().unwrap();
    let store = cli.store().await;
    let stored = store
        .find_api_key(secret)
        .await
        .unwrap()
        .expect("stored key");
    assert_eq!(
        (stored.role, stored.tenant_id.unwrap().to_string()),
        (Role::Admin, acme.clone())
    );
    assert_eq!(key["id"], stored.id.to_string());
    let table = cli.run(&["keys", "create", "--role", "superadmin"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table
            .stdout
            .contains("secret (shown once, not stored): vgw_"),
        "{}",
        table.stdout
    );

    let listed = cli
        .run(&["keys", "list", "--tenant", &acme, "--json"])
        .json();
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("secret").is_none());
    assert!(!listed.to_string().contains(secret));
    assert_eq!(
        cli.run(&["keys", "list", "--json"]).json()["keys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Refusals: exit 1 with the reason.
    let refused = cli.run(&["keys", "create", "--role", "agent"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("needs a tenant"),
        "{}",
        refused.stderr
    );
    let nobody = uuid::Uuid::now_v7().to_string();
    let refused = cli.run(&["keys", "create", "--role", "agent", "--tenant", &nobody]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("tenant not found"),
        "{}",
        refused.stderr
    );
    let refused = cli.run(&["tenants", "create", " "]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("must not be empty"),
        "{}",
        refused.stderr
    );

    // Revoke: refused at once; twice is refused.
    let id = key["id"].as_str().unwrap();
    let revoked = cli.run(&["keys", "revoke", id, "--json"]).json();
    assert!(revoked["revoked_at"].is_string());
    assert!(store.find_api_key(secret).await.unwrap().is_none());
    let again = cli.run(&["keys", "revoke", id]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("not found"), "{}", again.stderr);

    // Usage errors: exit 2.
    assert_eq!(cli.run(&["keys", "create", "--role", "boss"]).code, 2);
    assert_eq!(cli.run(&["keys", "create"]).code, 2);
    assert_eq!(cli.run(&["keys", "revoke", "not-a-uuid"]).code, 2);
    assert_eq!(
        cli.run(&["tenants", "create", "x", "--plan", "gold"]).code,
        2
    );
    assert_eq!(cli.run(&["tenants", "frobnicate"]).code, 2);
}

#[tokio::test]
async fn numbers() {
    let cli = Cli::new();
    let tenant = cli.run(&["tenants", "create", "acme", "--json"]).json();
    let tenant = tenant["id"].as_str().unwrap();
    let added = cli
        .run(&[
            "numbers",
            "add",
            "+1 (415) 555-0100",
            "--tenant",
            tenant,
            "--json",
        ])
        .json();
    assert_eq!(
        keys_of(&added),
        ["carrier", "created_at", "e164", "id", "tenant_id"]
    );
    assert_eq!(
        (added["e164"].as_str(), added["carrier"].as_str()),
        (Some("+14155550100"), Some("twilio"))
    );

    let table = cli.run(&[
        "numbers",
        "add",
        "+442079460958",
        "--tenant",
        tenant,
        "--carrier",
        "exotel",
    ]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("+442079460958") && table.stdout.contains("exotel"));

    let taken = cli.run(&["numbers", "add", "+14155550100", "--tenant", tenant]);
    assert_eq!(taken.code, 1);
    assert!(taken.stderr.contains("already exists"), "{}", taken.stderr);
    let bad = cli.run(&["numbers", "add", "555", "--tenant", tenant]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("invalid E.164 number"),
        "{}",
        bad.stderr
    );
    let no_script = cli.run(&[
        "numbers",
        "add",
        "+14155550101",
        "--tenant",
        tenant,
        "--script",
        "main",
    ]);
    assert_eq!(no_script.code, 1);
    assert!(
        no_script.stderr.contains("script not found"),
        "{}",
        no_script.stderr
    );

    // With the tenant's script in the store, the number runs it.
    let store = cli.store().await;
    let id = voicegw::store::TenantId(uuid::Uuid::parse_str(tenant).unwrap());
    store
        .save_script(id, "main", "[start]\nHi.\n-> END\n", "h")
        .await
        .unwrap();
    let with = cli
        .run(&[
            "numbers",
            "add",
            "+14155550101",
            "--tenant",
            tenant,
            "--script",
            "main",
            "--json",
        ])
        .json();
    assert_eq!(with["script"], "main");

    assert_eq!(
        cli.run(&[
            "numbers",
            "add",
            "+14155550102",
            "--tenant",
            tenant,
            "--carrier",
            "pigeon"
        ])
        .code,
        2
    );
    assert_eq!(cli.run(&["numbers", "add", "+14155550102"]).code, 2);

    let list = cli
        .run(&["numbers", "list", "--tenant", tenant, "--json"])
        .json();
    let e164s: Vec<&str> = list["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["e164"].as_str().unwrap())
        .collect();
    assert_eq!(e164s, ["+14155550100", "+442079460958", "+14155550101"]);
    let other = uuid::Uuid::now_v7().to_string();
    let none = cli
        .run(&["numbers", "list", "--tenant", &other, "--json"])
        .json();
    assert_eq!(none["numbers"], serde_json::json!([]));
    let table = cli.run(&["numbers", "list"]);
    assert_eq!(table.stdout.lines().count(), 4, "{}", table.stdout);
}
