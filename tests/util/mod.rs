//! Test harness: a real gateway in-process on 127.0.0.1:0 with a temp data dir, a scriptable
//! receiver, the real binary as a subprocess for crash tests, and bounded polling instead of
//! sleeps.

#![allow(dead_code)]

pub mod pg;
pub mod receiver;
pub mod wasm;
pub mod webdriver;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;

pub use receiver::{Behavior, Receiver};

pub const INGEST_TOKEN: &str = "test-ingest-token";
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// base64 of the bytes 0x00..0x1f, the shared vectors' secret.
pub const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The config every test starts from: loopback over http allowed (the receiver lives there),
/// short retry delays, no jitter so gaps are predictable, and a circuit breaker that only the
/// tests about it bring within reach (they set `breaker_failures` themselves).
pub fn base_config(data_dir: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{data_dir}"
shutdown_grace = "3s"

[auth]
ingest_tokens = ["{INGEST_TOKEN}"]
admin_tokens = ["{ADMIN_TOKEN}"]

[signing]
secret = "{SECRET}"

[delivery]
timeout = "2s"
max_retries = 3
backoff_initial = "100ms"
backoff_multiplier = 2.0
backoff_max = "10s"
jitter = 0.0
allow_http = true
allow_private_networks = true
breaker_failures = 10000
"#,
        data_dir = data_dir.display()
    )
}

/// An `[[endpoints]]` table.
pub fn endpoint(id: &str, url: &str, triggers: &str) -> String {
    format!("\n[[endpoints]]\nid = \"{id}\"\nurl = \"{url}\"\ntriggers = {triggers}\n")
}

/// Replaces `key = ...` under `[section]` in a config text (for tests that tweak one value).
pub fn set(config: &str, section: &str, key: &str, value: &str) -> String {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut done = false;
    for line in config.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if current == section && !done {
                out.push(format!("{key} = {value}"));
                done = true;
            }
            current = t.trim_matches(|c| c == '[' || c == ']').to_owned();
        }
        if current == section && t.starts_with(&format!("{key} ")) {
            out.push(format!("{key} = {value}"));
            done = true;
            continue;
        }
        out.push(line.to_owned());
    }
    if !done {
        if current != section {
            out.push(format!("[{section}]"));
        }
        out.push(format!("{key} = {value}"));
    }
    out.join("\n")
}

/// A gateway running in this process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestGateway {
    pub async fn start(config_text: &str) -> TestGateway {
        Self::start_with(config_text, hookgate::Hooks::default()).await
    }

    /// Starts a gateway from a config file written at `path`, so that it can be reloaded.
    pub async fn start_from_file(path: &Path, config_text: &str) -> TestGateway {
        std::fs::write(path, config_text).unwrap();
        let config = hookgate::Config::load(path, &|_| None).unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        Self::start_config(config, hookgate::Hooks::default()).await
    }

    /// [`start_from_file`](Self::start_from_file) with test hooks (`watch`, a manual clock).
    pub async fn start_from_file_with(path: &Path, config_text: &str, hooks: hookgate::Hooks) -> TestGateway {
        std::fs::write(path, config_text).unwrap();
        let config = hookgate::Config::load(path, &|_| None).unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        Self::start_config(config, hooks).await
    }

    /// Starts a gateway with test hooks: a manual clock, the store's fault switches.
    pub async fn start_with(config_text: &str, hooks: hookgate::Hooks) -> TestGateway {
        let config = hookgate::Config::parse(config_text, "test.toml", Path::new("/"), &|_| None)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        Self::start_config(config, hooks).await
    }

    async fn start_config(config: hookgate::Config, hooks: hookgate::Hooks) -> TestGateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hookgate::run_with(
            Arc::new(config),
            listener,
            async move {
                let _ = stopped.await;
            },
            hooks,
        ));
        TestGateway {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }

    pub async fn ingest(&self, body: &Value) -> (u16, Value) {
        self.ingest_raw(body.to_string().into_bytes(), &[]).await
    }

    /// POST /v1/events with the ingest token, JSON content type and extra headers.
    pub async fn ingest_raw(&self, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/events", self.base))
            .header("authorization", format!("Bearer {INGEST_TOKEN}"))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        response(req).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let req =
            self.http.get(format!("{}{path}", self.base)).header("authorization", format!("Bearer {ADMIN_TOKEN}"));
        response(req).await
    }

    /// An admin request with a JSON body (`POST`, `PATCH`).
    pub async fn send_json(&self, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
        let req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(body.to_string());
        response(req).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PATCH, path, body).await
    }

    pub async fn delivery(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/deliveries/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The ids of an event's deliveries.
    pub async fn delivery_ids(&self, event_id: &str) -> Vec<String> {
        let (status, body) = self.get(&format!("/v1/events/{event_id}")).await;
        assert_eq!(status, 200, "{body}");
        body["deliveries"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect()
    }

    /// Waits until the delivery leaves `pending`, and returns it.
    pub async fn settled(&self, delivery_id: &str, within: Duration) -> Value {
        eventually(within, || async {
            let d = self.delivery(delivery_id).await;
            (d["state"] != "pending").then_some(d)
        })
        .await
    }
}

/// A Prometheus sample's value from `/metrics` (the first line starting with `name`).
pub async fn metric(gw: &TestGateway, name: &str) -> f64 {
    let text = gw.http.get(format!("{}/metrics", gw.base)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

pub async fn response(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request to the gateway");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Polls `check` until it returns `Some`, at most `within`; panics on timeout. The poll interval
/// is short so tests finish as soon as the condition holds.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A bot.state_change event for `bot`.
pub fn state_change(bot: &str) -> Value {
    serde_json::json!({
        "trigger": "bot.state_change",
        "bot_id": bot,
        "bot_metadata": {"customer": "Zoë"},
        "data": {
            "new_state": "ended",
            "old_state": "post_processing",
            "created_at": "2025-07-15T14:30:45.123456+00:00",
            "event_type": "post_processing_completed",
            "event_sub_type": null,
            "event_metadata": null
        }
    })
}

/// The real `hookgate` binary, for tests that kill or signal the process.
pub struct GatewayProcess {
    pub child: std::process::Child,
    pub base: String,
}

impl GatewayProcess {
    /// Writes `config` (whose `listen` must be `127.0.0.1:{port}`) and starts `hookgate serve`,
    /// returning once `/healthz` answers.
    pub async fn spawn(config_path: &Path, config: &str, port: u16) -> GatewayProcess {
        Self::spawn_with(config_path, config, port, &[]).await
    }

    /// [`spawn`](Self::spawn) with more `serve` arguments (`--watch`).
    pub async fn spawn_with(config_path: &Path, config: &str, port: u16, args: &[&str]) -> GatewayProcess {
        std::fs::write(config_path, config).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["serve", "--config"])
            .arg(config_path)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start hookgate");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let url = format!("{base}/healthz");
        eventually(Duration::from_secs(30), || async {
            http.get(&url).send().await.ok().filter(|r| r.status().is_success())
        })
        .await;
        GatewayProcess { child, base }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn signal(&self, sig: &str) {
        let ok =
            std::process::Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "process did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Says that a test skipped and why, on the terminal: the harness captures `eprintln!`, so a
/// skipped test would otherwise show as a plain `ok`. Callers decide first that they may skip
/// (never under `CI`).
pub fn skipped(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "\nSKIPPED {}: {why}\n", std::thread::current().name().unwrap_or("test"));
}

/// `promtool` (Debian's `prometheus` package, which `.ci/run` installs), or `None` locally
/// after saying how to get it. Under `CI` a missing `promtool` fails the test.
pub fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file());
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("promtool is not installed: under CI the exposition is checked")
        }
        None => {
            skipped("install promtool (Debian: apt-get install prometheus) to check the /metrics exposition");
            None
        }
    }
}

/// The throwaway PostgreSQL server's URL (`HOOKGATE_TEST_POSTGRES_URL`, started by `.ci/run`),
/// or `None` locally after saying how to get one. Under `CI` a missing server fails the test.
pub fn pg_server() -> Option<String> {
    let var = hookgate::store::pg::testing::ENV;
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!("{var} is not set: under CI the PostgreSQL tests must run"),
        _ => {
            skipped(&format!("set {var} to a throwaway PostgreSQL server's URL (.ci/run starts one)"));
            None
        }
    }
}

/// A new, empty database on the test server (see [`pg_server`]).
pub async fn fresh_database() -> Option<String> {
    let base = pg_server()?;
    Some(hookgate::store::pg::testing::fresh_database(&base).await.unwrap())
}

/// A config transform that puts a test's gateway on one storage backend.
pub type OnBackend = Box<dyn Fn(String) -> String + Send + Sync>;

/// The storage backends a test runs on: redb always, and PostgreSQL on a fresh database when a
/// test server is configured (always under `CI`).
pub async fn backends() -> Vec<(&'static str, OnBackend)> {
    let mut out: Vec<(&'static str, OnBackend)> = vec![("redb", Box::new(|c| c))];
    if let Some(db) = fresh_database().await {
        out.push((
            "postgres",
            Box::new(move |c: String| {
                let c = set(&c, "storage", "backend", "\"postgres\"");
                set(&c, "storage", "postgres_url", &format!("\"{db}\""))
            }),
        ));
    }
    out
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn path_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// The python of a venv at `dir/.venv` with `dir/requirements.txt` installed (once: it is kept
/// while `import` works), or `None` locally after saying how to get Python. Under `CI` a
/// missing Python fails the test.
pub fn venv_python(dir: &Path, import: &str) -> Option<PathBuf> {
    let venv = dir.join(".venv");
    let python = venv.join("bin/python");
    let built = (|| {
        let installed = std::process::Command::new(&python).args(["-c", &format!("import {import}")]).output();
        if !installed.is_ok_and(|o| o.status.success()) {
            run_tool(std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
            run_tool(
                std::process::Command::new(venv.join("bin/pip"))
                    .args(["install", "-q", "-r", "requirements.txt"])
                    .current_dir(dir),
            )?;
        }
        Ok(python)
    })();
    tool_ready(built)
}

/// A tool's outcome: its path, or `None` after saying it skipped when the tool is missing and
/// this is not CI; any other failure fails the test.
pub fn tool_ready(built: Result<PathBuf, String>) -> Option<PathBuf> {
    match built {
        Ok(p) => Some(p),
        Err(e) if e.starts_with("missing:") && std::env::var_os("CI").is_none() => {
            skipped(&e);
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Runs a setup command: `Err("missing: …")` when it cannot start, `Err` with its output when
/// it fails.
pub fn run_tool(cmd: &mut std::process::Command) -> Result<(), String> {
    wasm::run(cmd).map_err(|e| {
        if e.starts_with("cannot run") {
            format!("missing: {e}; install python3, python3-venv, nodejs and npm")
        } else {
            e
        }
    })
}
