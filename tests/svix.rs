//! The Svix-compatible API driven by the official Svix SDKs, unchanged but for the server URL:
//! Python (`svix`, pinned in `tests/svix-sdk/requirements.txt`, installed into a venv by this
//! test) runs `flow.py`, JavaScript (`svix` from npm, pinned in `tests/svix-sdk/js`'s lockfile,
//! installed with `npm ci`) runs `js/flow.mjs`. Each creates applications, event types and
//! endpoints, sends messages, lists them and their attempts, resends, rotates a secret, opens
//! the portal, and verifies every delivery with the SDK's own `Webhook` class. Under `CI` a
//! missing Python or Node.js fails the test; elsewhere it says it skipped.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::util::*;

/// The venv's python with the Python SDK installed, built once per test run.
fn sdk_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON.get_or_init(|| venv_python(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/svix-sdk"), "svix")).clone()
}

/// `tests/svix-sdk/js` with the npm SDK installed from the lockfile, once per test run.
fn sdk_node() -> Option<PathBuf> {
    static NODE: OnceLock<Option<PathBuf>> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/svix-sdk/js");
        tool_ready((|| {
            run_tool(std::process::Command::new("node").arg("--version"))?;
            if !dir.join("node_modules/svix/package.json").exists() {
                run_tool(std::process::Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir))?;
            }
            Ok(dir.clone())
        })())
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_python_sdk_drives_the_compatible_api() {
    let Some(python) = sdk_python() else { return };
    let flow = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/svix-sdk/flow.py");
    for (backend, on) in backends().await {
        let mut cmd = tokio::process::Command::new(&python);
        cmd.arg(&flow);
        sdk_flow(cmd, "svix flow ok", ("acme", "Acme Corp"), backend, on).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_javascript_sdk_drives_the_compatible_api() {
    let Some(dir) = sdk_node() else { return };
    for (backend, on) in backends().await {
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg("flow.mjs").current_dir(&dir);
        sdk_flow(cmd, "svix js flow ok", ("globex", "Globex Corp"), backend, on).await;
    }
}

/// Runs one SDK flow against a fresh gateway on `backend`, then checks through the native API
/// that its application is a tenant (`uid`, renamed to `name` by the flow) whose delivery log
/// holds its two delivered messages, the first resent once.
async fn sdk_flow(mut cmd: tokio::process::Command, ok: &str, (uid, name): (&str, &str), backend: &str, on: OnBackend) {
    let dir = temp_dir();
    let cfg = set(&base_config(dir.path()), "delivery", "signature_headers", r#"["webhook", "svix"]"#);
    let cfg = set(&cfg, "event_types", "validate", "true");
    let gw = TestGateway::start(&on(cfg)).await;
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        cmd.env("HOOKGATE_URL", &gw.base).env("HOOKGATE_TOKEN", ADMIN_TOKEN).kill_on_drop(true).output(),
    )
    .await
    .expect("the SDK flow finished in time")
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains(ok), "{backend}: {stdout}\n{stderr}");

    // One object in both APIs: the application is the tenant, its message an event in the log.
    let (s, t) = gw.get(&format!("/v1/tenants/{uid}")).await;
    assert_eq!((s, t["name"].as_str()), (200, Some(name)), "{t}");
    let (_, log) = gw.get(&format!("/v1/tenants/{uid}/deliveries")).await;
    let data = log["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{log}");
    let states: Vec<(&str, u64)> =
        data.iter().map(|d| (d["state"].as_str().unwrap(), d["attempt_count"].as_u64().unwrap())).collect();
    assert_eq!(states, [("succeeded", 1), ("succeeded", 2)], "newest first; the first message was resent: {log}");
    gw.stop().await.unwrap();
}

/// `[event_types] validate = true` checks native events too: an event whose object does not
/// match its event type's schema is refused with 422 naming the path, one that matches is
/// accepted, and an event type without a schema (or validation off) checks nothing.
#[tokio::test]
async fn event_type_schemas_check_native_events_when_asked() {
    let dir = temp_dir();
    let cfg = set(&base_config(dir.path()), "event_types", "validate", "true");
    let gw = TestGateway::start(&cfg).await;
    let schema = serde_json::json!({"type": "object", "required": ["data"],
        "properties": {"data": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer"}}}}});
    let (s, t) = gw
        .send_json(
            reqwest::Method::POST,
            "/api/v1/event-type",
            &serde_json::json!({"name": "invoice.paid", "description": "paid", "schemas": {"1": schema}}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let (s, b) = gw.ingest(&serde_json::json!({"trigger": "invoice.paid", "data": {"amount": "12"}})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (422, Some("schema_mismatch")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("/data/amount"), "{b}");
    assert_eq!(gw.ingest(&serde_json::json!({"trigger": "invoice.paid", "data": {"amount": 12}})).await.0, 202);
    assert_eq!(gw.ingest(&serde_json::json!({"trigger": "other.type", "data": {"x": "y"}})).await.0, 202);
    let (s, b) = gw
        .send_json(
            reqwest::Method::POST,
            "/api/v1/event-type",
            &serde_json::json!({"name": "bad.schema", "description": "", "schemas": {"1": {"type": 5}}}),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (422, Some("validation")), "a schema that cannot compile is refused: {b}");
    gw.stop().await.unwrap();
}

/// A repeated `idempotency-key` on a Svix POST replays the first answer: one application and
/// one endpoint, whatever the number of retries; another key (or another caller) acts anew.
#[tokio::test]
async fn a_repeated_idempotency_key_replays_the_first_answer() {
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    let post = |path: &str, key: &str, body: serde_json::Value| {
        let req = gw
            .http
            .post(format!("{}{path}", gw.base))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(body.to_string());
        response(req)
    };
    let first = post("/api/v1/app", "k-1", serde_json::json!({"name": "Hooli", "uid": "hooli"})).await;
    let again = post("/api/v1/app/", "k-1", serde_json::json!({"name": "Hooli", "uid": "hooli"})).await;
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(again, first, "the same answer, not a 409");
    let other = post("/api/v1/app", "k-2", serde_json::json!({"name": "Hooli", "uid": "hooli"})).await;
    assert_eq!(other.0, 409, "a new key acts anew: {}", other.1);

    let body = serde_json::json!({"url": "https://hooks.example/in"});
    let ep = post("/api/v1/app/hooli/endpoint", "k-3", body.clone()).await;
    let ep_again = post("/api/v1/app/hooli/endpoint", "k-3", body.clone()).await;
    assert_eq!((ep.0, &ep_again), (201, &ep), "{}", ep.1);
    let (_, list) = gw.get("/api/v1/app/hooli/endpoint").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "one endpoint: {list}");
    gw.stop().await.unwrap();
}

/// Ed25519 through the Svix API: an endpoint created with a `whsk_` secret shows its `whpk_`
/// public key with the secret, and its deliveries' `svix-signature` carries a `v1a` signature
/// that an Ed25519 library verifies with that public key alone.
#[tokio::test]
async fn an_ed25519_endpoint_signs_v1a_under_svix_names() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let cfg = set(&base_config(dir.path()), "delivery", "signature_headers", r#"["webhook", "svix"]"#);
    let gw = TestGateway::start(&cfg).await;
    let (s, _) =
        gw.send_json(reqwest::Method::POST, "/api/v1/app", &serde_json::json!({"name": "Ed", "uid": "ed"})).await;
    assert_eq!(s, 201);
    let body = serde_json::json!({"url": rx.url("/ed"), "uid": "signer", "secret": format!("whsk_{SECRET}")});
    let (s, ep) = gw.send_json(reqwest::Method::POST, "/api/v1/app/ed/endpoint", &body).await;
    assert_eq!(s, 201, "{ep}");
    let (_, secret) = gw.get("/api/v1/app/ed/endpoint/signer/secret").await;
    assert_eq!(secret["key"], format!("whsk_{SECRET}"));
    let public_key = secret["publicKey"].as_str().unwrap().to_owned();
    assert!(public_key.starts_with("whpk_"), "{secret}");
    let msg = serde_json::json!({"eventType": "key.used", "payload": {"n": 1}});
    assert_eq!(gw.send_json(reqwest::Method::POST, "/api/v1/app/ed/msg", &msg).await.0, 202);
    let got = rx.next(std::time::Duration::from_secs(15)).await;
    assert!(got.header("svix-signature").starts_with("v1a,"), "{}", got.header("svix-signature"));
    assert_eq!(got.header("svix-signature"), got.header("webhook-signature"));
    assert!(crate::tenants::v1a_verifies(&got, &public_key), "v1a verifies with the public key");
    use base64::Engine as _;
    let other = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let other = format!("whpk_{}", base64::engine::general_purpose::STANDARD.encode(other.as_bytes()));
    assert!(!crate::tenants::v1a_verifies(&got, &other), "and not with another key");
    gw.stop().await.unwrap();
}
