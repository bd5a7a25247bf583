//! Headless Chromium driven over the DevTools protocol (a WebSocket on 127.0.0.1), for
//! the browser tests: open a page, run a line of script in it, wait for a condition,
//! take a screenshot. A fresh profile directory each time; every network feature that
//! would reach out (updates, sync, QUIC) is off, since the machine has no internet.
//!
//! Without a browser the tests skip with a message, except under `CI=true`, where a
//! missing browser is a failure (`.ci/run` installs Chromium).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The browser executable: `$CHROMIUM`, else the first of the usual names on PATH.
pub fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let paths = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"].iter().find_map(|name| {
        std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
    })
}

/// The browser, or `None` (with a message) when none is installed outside CI.
pub fn required() -> Result<Option<PathBuf>> {
    match find() {
        Some(path) => Ok(Some(path)),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            bail!("CI=true and no Chromium found (install the `chromium` package; .ci/run does)")
        }
        None => {
            eprintln!(
                "SKIPPED: no Chromium on PATH (apt-get install chromium); CI fails instead of skipping"
            );
            Ok(None)
        }
    }
}

/// Where screenshots go: `docs/` when `XMCREDIT_SCREENSHOTS=docs`, else the test's
/// temporary directory (tests must not rewrite the repository on every run).
pub fn screenshot_dir(temp: &Path) -> PathBuf {
    if std::env::var("XMCREDIT_SCREENSHOTS").is_ok_and(|v| v == "docs") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
    } else {
        temp.to_path_buf()
    }
}

/// One headless browser with one page.
pub struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    pub fn launch(executable: &Path) -> Result<Self> {
        let profile = tempfile::Builder::new().prefix("xmcredit-chromium-").tempdir()?;
        let mut child = Command::new(executable)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", executable.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the DevTools address, then keeps draining stderr so the browser never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                bail!("{} did not open its DevTools socket within 60 s", executable.display());
            }
        };
        let (mut socket, _) = tungstenite::connect(url.as_str()).context("connecting to DevTools")?;
        if let MaybeTlsStream::Plain(stream) = socket.get_mut() {
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        }
        let mut browser = Self { child, socket, session: String::new(), next_id: 0, _profile: profile };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target["targetId"].as_str().context("no target id")?.to_string();
        let attached =
            browser.call("Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }))?;
        browser.session = attached["sessionId"].as_str().context("no session id")?.to_string();
        browser.call("Page.enable", json!({}))?;
        browser.call("Runtime.enable", json!({}))?;
        Ok(browser)
    }

    /// Sends one DevTools command (to the page once attached) and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket.send(Message::text(message.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Message::Text(text) = self.socket.read()? else { continue };
            let reply: Value = serde_json::from_str(&text)?;
            if reply["id"].as_u64() == Some(id) {
                if let Some(error) = reply.get("error") {
                    bail!("{method}: {error}");
                }
                return Ok(reply["result"].clone());
            }
        }
        bail!("{method}: no answer within 60 s")
    }

    /// Evaluates `expression` in the page and returns its value.
    pub fn eval(&mut self, expression: &str) -> Result<Value> {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("script {expression:?} threw: {exception}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Waits (up to 30 s) until `condition` evaluates to true.
    pub fn wait_for(&mut self, condition: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.eval(condition).ok() == Some(Value::Bool(true)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let body = self.eval("document.body ? document.body.innerText : ''").unwrap_or_default();
        bail!("timed out waiting for {condition:?}; the page says: {body}")
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&mut self, url: &str) -> Result<()> {
        self.call("Page.navigate", json!({ "url": url }))?;
        self.wait_for(&format!(
            "document.readyState === 'complete' && location.href.startsWith({})",
            json!(url)
        ))
    }

    /// A PNG of the whole page.
    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        let metrics = self.call("Page.getLayoutMetrics", json!({}))?;
        let width = metrics["cssContentSize"]["width"].as_f64().unwrap_or(1280.0).max(800.0);
        let height = metrics["cssContentSize"]["height"].as_f64().unwrap_or(900.0).min(4000.0);
        let shot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 } }),
        )?;
        let data = shot["data"].as_str().context("no screenshot data")?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(data)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, bytes)?;
        Ok(())
    }
}
