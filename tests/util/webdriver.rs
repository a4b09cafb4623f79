//! A minimal W3C WebDriver client over HTTP, enough to drive Debian's `chromium` through its
//! `chromedriver` in tests: no browser download, no extra crates.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian installs them (`apt-get install chromium chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
    /// One browser at a time: two Chromiums on two cores starve each other's timeouts.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

fn turn() -> Arc<tokio::sync::Mutex<()>> {
    static TURN: std::sync::OnceLock<Arc<tokio::sync::Mutex<()>>> = std::sync::OnceLock::new();
    TURN.get_or_init(Arc::default).clone()
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session.
    pub async fn start() -> Browser {
        let turn = turn().lock_owned().await;
        let port = super::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                let v: Value = serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // The flags keep Chromium from reaching for the network (closed here) on its own.
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1400,900",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let mut b = Browser { driver, base, session: String::new(), http, _profile: profile, _turn: turn };
        let v = b.call(reqwest::Method::POST, "/session", caps).await;
        b.session = v["sessionId"].as_str().expect("a WebDriver session").to_owned();
        b
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if method != reqwest::Method::GET {
            req = req.header("content-type", "application/json").body(body.to_string());
        }
        let text = req.send().await.expect("chromedriver answers").text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(err) = v["value"]["error"].as_str() {
            panic!("WebDriver {method} {path}: {err}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, &self.path("/url"), json!({"url": url})).await;
    }

    /// The first element matching `css`, waiting up to 10 s for it to appear.
    pub async fn find(&self, css: &str) -> Element<'_> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.try_find(css).await;
            if let Some(id) = v {
                return Element { browser: self, id };
            }
            assert!(Instant::now() < deadline, "no element matches {css:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn try_find(&self, css: &str) -> Option<String> {
        let url = format!("{}{}", self.base, self.path("/elements"));
        let query = json!({"using": "css selector", "value": css});
        let resp =
            self.http.post(url).header("content-type", "application/json").body(query.to_string()).send().await.ok()?;
        let v: Value = serde_json::from_str(&resp.text().await.ok()?).ok()?;
        v["value"].as_array()?.first()?[ELEMENT_KEY].as_str().map(str::to_owned)
    }

    /// Runs JavaScript in the page and returns its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.call(reqwest::Method::POST, &self.path("/execute/sync"), json!({"script": script, "args": []})).await
    }

    /// Waits until `script` (an expression) is truthy in the page.
    pub async fn wait_for(&self, script: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.eval(&format!("return !!({script});")).await != Value::Bool(true) {
            assert!(Instant::now() < deadline, "page condition not met: {script}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG screenshot (for people debugging a failure).
    pub async fn screenshot(&self, path: &Path) {
        let v = self.call(reqwest::Method::GET, &self.path("/screenshot"), Value::Null).await;
        use base64::Engine as _;
        if let Some(b64) = v.as_str() {
            let _ = std::fs::write(path, base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default());
        }
    }
}

impl Browser {
    /// Ends the session (closing Chromium) and stops chromedriver.
    pub async fn quit(mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(url).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After `quit` this is a no-op; after a panic it at least stops the driver.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    pub async fn click(&self) {
        let p = self.browser.path(&format!("/element/{}/click", self.id));
        self.browser.call(reqwest::Method::POST, &p, json!({})).await;
    }

    pub async fn clear(&self) {
        let p = self.browser.path(&format!("/element/{}/clear", self.id));
        self.browser.call(reqwest::Method::POST, &p, json!({})).await;
    }

    pub async fn type_text(&self, text: &str) {
        let p = self.browser.path(&format!("/element/{}/value", self.id));
        self.browser.call(reqwest::Method::POST, &p, json!({"text": text})).await;
    }

    pub async fn text(&self) -> String {
        let p = self.browser.path(&format!("/element/{}/text", self.id));
        self.browser.call(reqwest::Method::GET, &p, Value::Null).await.as_str().unwrap_or_default().to_owned()
    }
}
