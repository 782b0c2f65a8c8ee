//! `GET /openapi.json`: served without a key; every `/v1` path the control plane routes is in
//! it (and each documented operation is routed and asks for a key); the bearer scheme and the
//! error schema are there; each resource schema has exactly the fields of its proto message.

mod common;

use std::collections::BTreeSet;

use common::control::TestControl;
use common::db::TestDb;
use common::test_config;
use prost::Message;
use serde_json::Value;

/// The path literals of every `.route("…", …)` in the control plane's sources.
fn routed_paths() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/control");
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = rest[at + ".route(".len()..].trim_start();
            if let Some(literal) = rest.strip_prefix('"') {
                let end = literal.find('"').unwrap();
                paths.insert(literal[..end].to_owned());
            }
        }
    }
    paths
}

fn proto_fields() -> Vec<(String, BTreeSet<String>)> {
    let set = prost_types::FileDescriptorSet::decode(voicegw::proto::DESCRIPTOR_SET).unwrap();
    let file = set
        .file
        .iter()
        .find(|f| f.name() == "voicegw.proto")
        .unwrap();
    file.message_type
        .iter()
        .map(|m| {
            let fields = m.field.iter().map(|f| f.name().to_owned()).collect();
            (m.name().to_owned(), fields)
        })
        .collect()
}

#[tokio::test]
async fn the_document_covers_the_routes_and_mirrors_the_proto() {
    let api = TestControl::start(TestDb::sqlite().await, test_config()).await;
    let response = api.http.get(api.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routed: BTreeSet<String> = routed_paths()
        .into_iter()
        .filter(|p| p.starts_with("/v1"))
        .collect();
    assert!(
        routed.contains("/v1/numbers/{id}"),
        "the scan found the routes: {routed:?}"
    );
    let missing: Vec<&String> = routed.difference(&documented).collect();
    assert!(missing.is_empty(), "routed but not documented: {missing:?}");

    // Each documented operation is routed (not axum's bare 404/405) and asks for a key.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = path
            .replace("{id}", &uuid::Uuid::nil().to_string())
            .replace("{name}", "main")
            .replace("{version}", "1");
        for (method, operation) in item.as_object().unwrap() {
            assert_eq!(
                operation["security"][0]["bearer"],
                serde_json::json!([]),
                "{method} {path}"
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, body) = api.call(method.clone(), &url, None, None).await;
            assert_eq!(status.as_u16(), 401, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
        }
    }

    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (scheme["type"].as_str(), scheme["scheme"].as_str()),
        (Some("http"), Some("bearer"))
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let error = &schemas["ErrorBody"];
    assert_eq!(
        error["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorDetail"
    );
    let detail: BTreeSet<&str> = schemas["ErrorDetail"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(
        detail.contains("code") && detail.contains("message"),
        "{detail:?}"
    );

    // Every resource schema that has a proto message has exactly its fields.
    let mut checked = Vec::new();
    for (message, fields) in proto_fields() {
        let Some(schema) = schemas.get(&message) else {
            continue;
        };
        let properties: BTreeSet<String> = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{message} has properties"))
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            properties, fields,
            "schema {message} against its proto message"
        );
        checked.push(message);
    }
    for resource in ["Tenant", "ApiKey", "PhoneNumber", "Script"] {
        assert!(
            checked.iter().any(|m| m == resource),
            "{resource} not checked: {checked:?}"
        );
    }
}
