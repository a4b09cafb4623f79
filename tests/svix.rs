//! The Svix-compatible API driven by the official Svix Python SDK (`svix`, pinned in
//! `tests/svix-sdk/requirements.txt`, installed into a venv by this test): `flow.py` creates
//! applications and endpoints, sends messages, and verifies every delivery with the SDK's own
//! `Webhook` class. Under `CI` a missing Python fails the test; elsewhere it says it skipped.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::util::*;

static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The venv's python with the SDK installed, built once per test run.
fn sdk_python() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/svix-sdk");
    let built = PYTHON.get_or_init(|| {
        let venv = dir.join(".venv");
        let python = venv.join("bin/python");
        let installed = std::process::Command::new(&python).args(["-c", "import svix"]).output();
        if !installed.is_ok_and(|o| o.status.success()) {
            run(std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
            run(std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "-r", "requirements.txt"])
                .current_dir(&dir))?;
        }
        Ok(python)
    });
    match built {
        Ok(p) => Some(p.clone()),
        Err(e) if e.starts_with("missing:") && std::env::var_os("CI").is_none() => {
            skipped(e);
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn run(cmd: &mut std::process::Command) -> Result<(), String> {
    let out =
        cmd.output().map_err(|e| format!("missing: cannot run {cmd:?} ({e}); install python3 and python3-venv"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_python_sdk_drives_the_compatible_api() {
    let Some(python) = sdk_python() else { return };
    for (backend, on) in backends().await {
        sdk_flow(&python, backend, on).await;
    }
}

async fn sdk_flow(python: &Path, backend: &str, on: OnBackend) {
    let dir = temp_dir();
    let cfg = set(&base_config(dir.path()), "delivery", "signature_headers", r#"["webhook", "svix"]"#);
    let cfg = set(&cfg, "event_types", "validate", "true");
    let gw = TestGateway::start(&on(cfg)).await;
    let flow = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/svix-sdk/flow.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python)
            .arg(flow)
            .env("HOOKGATE_URL", &gw.base)
            .env("HOOKGATE_TOKEN", ADMIN_TOKEN)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the SDK flow finished in time")
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("svix flow ok"), "{backend}: {stdout}\n{stderr}");

    // One object in both APIs: the application is the tenant, its message an event in the log.
    let (s, t) = gw.get("/v1/tenants/acme").await;
    assert_eq!((s, t["name"].as_str()), (200, Some("Acme Corp")), "{t}");
    let (_, log) = gw.get("/v1/tenants/acme/deliveries").await;
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
