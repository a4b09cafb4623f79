//! What the in-process benchmarks share: a gateway on 127.0.0.1:0 with a temp data dir, one
//! endpoint delivering to a local receiver that answers 200.

use std::sync::Arc;

pub const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A running gateway; [`Gateway::stop`] shuts it down in order.
pub struct Gateway {
    pub base: String,
    /// The data dir; it lives (and is deleted) with the gateway.
    #[allow(dead_code)]
    pub dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    receiver: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts the gateway with ingest token `t`, admin token `a` and one endpoint `r` for every
/// trigger; `extra` is appended to the config (e.g. a `[retention]` table).
pub async fn start(extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let rx = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_url = format!("http://{}/hook", rx.local_addr().unwrap());
    let receiver = tokio::spawn(async move { axum::serve(rx, axum::Router::new().fallback(|| async { "ok" })).await });
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n[auth]\ningest_tokens = [\"t\"]\nadmin_tokens = [\"a\"]\n[signing]\nsecret = \"{SECRET}\"\n\
         [delivery]\nallow_http = true\nallow_private_networks = true\n{extra}\n\
         [[endpoints]]\nid = \"r\"\nurl = \"{receiver_url}\"\ntriggers = [\"*\"]\n",
        dir.path().display()
    );
    let config = hookgate::Config::parse(&text, "bench.toml", dir.path(), &|_| None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hookgate::run(Arc::new(config), listener, async move {
        let _ = stopped.await;
    }));
    Gateway { base, dir, stop, task, receiver }
}

impl Gateway {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        self.receiver.abort();
    }
}
