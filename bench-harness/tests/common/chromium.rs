//! Headless Chromium (Debian's `chromium` package) driven over the DevTools protocol, for the
//! HTML report tests: open a `file://` page, collect console errors, uncaught exceptions and
//! every network request it makes, evaluate a check script, and take a full-page screenshot.
//!
//! Chromium runs with a fresh profile in a temp dir, `--remote-debugging-port=0` (it writes the
//! port it chose to `DevToolsActivePort` in the profile), and the flags that keep it off the
//! network on its own (`--disable-background-networking` and friends). Every wait has a
//! deadline, so a hung browser fails the test instead of hanging it. The browser is closed and
//! its process reaped on drop.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// How long Chromium may take to start and to load a page.
const STARTUP: Duration = Duration::from_secs(60);
const PAGE_LOAD: Duration = Duration::from_secs(60);
/// Width of the screenshot viewport, CSS pixels; the height follows the page (capped).
const VIEWPORT_WIDTH: u64 = 1280;
const MAX_SCREENSHOT_HEIGHT: u64 = 20_000;

/// The Chromium binary to use: `$CHROMIUM`, else `chromium` (or `chromium-browser`) on `PATH`.
/// `None` when there is none; with `STAMPEDE_REQUIRE_REAL=1` that panics instead, so CI cannot
/// silently skip the browser tests.
pub fn find_or_skip(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .flat_map(|dir| ["chromium", "chromium-browser"].map(|n| dir.join(n)))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        if stampede_lab::real_parts_required() {
            panic!(
                "{test}: chromium not found (apt-get install chromium) and STAMPEDE_REQUIRE_REAL=1"
            );
        }
        eprintln!("{test}: skipped: chromium not found (apt-get install chromium to run it)");
    }
    found
}

/// What loading one page did.
#[derive(Debug, Default)]
pub struct PageVisit {
    /// `console.error` calls and error-level log entries (CSP violations, failed loads).
    pub console_errors: Vec<String>,
    /// Uncaught exceptions.
    pub exceptions: Vec<String>,
    /// URLs requested besides the page itself and `data:` URLs.
    pub requests: Vec<String>,
    /// The check script's value.
    pub checks: Value,
    /// A full-page PNG.
    pub screenshot: Vec<u8>,
}

impl PageVisit {
    /// Notes what event `e` of the page at `url` says: a console error, an exception, or a
    /// request the page made (other than for itself or a `data:` URL).
    fn note(&mut self, e: &Value, url: &str) {
        let p = &e["params"];
        match e["method"].as_str().unwrap_or("") {
            "Runtime.consoleAPICalled"
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        a["value"]
                            .as_str()
                            .map_or_else(|| a.to_string(), str::to_owned)
                    })
                    .collect();
                self.console_errors.push(args.join(" "));
            }
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                self.console_errors.push(format!(
                    "{} ({})",
                    p["entry"]["text"].as_str().unwrap_or(""),
                    p["entry"]["url"].as_str().unwrap_or("")
                ));
            }
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                self.exceptions.push(
                    d["exception"]["description"]
                        .as_str()
                        .or_else(|| d["text"].as_str())
                        .unwrap_or("exception")
                        .to_owned(),
                );
            }
            "Network.requestWillBeSent" => {
                let requested = p["request"]["url"].as_str().unwrap_or("");
                if requested != url && !requested.starts_with("data:") {
                    self.requests.push(requested.to_owned());
                }
            }
            _ => {}
        }
    }
}

impl PageVisit {
    /// Every problem: console errors, exceptions, network requests.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(
            self.console_errors
                .iter()
                .map(|e| format!("console error: {e}")),
        );
        out.extend(self.exceptions.iter().map(|e| format!("exception: {e}")));
        out.extend(
            self.requests
                .iter()
                .map(|u| format!("network request: {u}")),
        );
        out
    }
}

/// A running headless Chromium with a DevTools connection to its browser target.
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Messages read while waiting for something else, kept for whoever wants them.
    pending: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `exe` headless with a fresh profile and connects to it.
    pub fn launch(exe: &Path) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        let child = Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--disable-extensions",
                "--disable-default-apps",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
        let mut browser_child = ChildGuard(Some(child));
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + STARTUP;
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.trim().to_owned(), path.trim().to_owned());
                }
            }
            if let Some(status) = browser_child
                .0
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = std::fs::read_to_string(profile.path().join("chromium.log"))
                    .unwrap_or_default();
                panic!("chromium exited with {status} before listening:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not write DevToolsActivePort within {STARTUP:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        // A long timeout for the handshake (a busy machine answers slowly); reads after it
        // poll with a short one so deadlines are checked.
        stream.set_read_timeout(Some(STARTUP)).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let config = WebSocketConfig::default()
            .max_message_size(Some(512 << 20))
            .max_frame_size(Some(512 << 20));
        let (mut ws, _) = tungstenite::client::client_with_config(
            format!("ws://127.0.0.1:{port}{path}"),
            stream,
            Some(config),
        )
        .unwrap_or_else(|e| panic!("DevTools handshake: {e}"));
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_millis(250)))
            .unwrap();
        Self {
            child: browser_child.0.take().expect("child"),
            ws,
            next_id: 0,
            pending: Vec::new(),
            _profile: profile,
        }
    }

    /// The next message, or `None` when none arrived within the socket's read timeout.
    fn read(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(t)) => Some(serde_json::from_str(t.as_str()).unwrap()),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                None
            }
            Err(e) => panic!("DevTools connection: {e}"),
        }
    }

    /// Sends a command (to a page session if given) and waits for its result; events read
    /// meanwhile are kept.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        let deadline = Instant::now() + PAGE_LOAD;
        loop {
            assert!(
                Instant::now() < deadline,
                "no answer to {method} within {PAGE_LOAD:?}"
            );
            let Some(m) = self.read() else { continue };
            if m.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = m.get("error") {
                    panic!("{method}: {err}");
                }
                return m["result"].clone();
            }
            self.pending.push(m);
        }
    }

    /// Opens `url` in a new tab, waits for it to load and settle, evaluates `check` (an
    /// expression whose value is returned as JSON), and takes a full-page screenshot.
    pub fn visit(&mut self, url: &str, check: &str) -> PageVisit {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        let session = attached["sessionId"].as_str().unwrap().to_owned();
        let s = Some(session.as_str());
        for domain in ["Runtime", "Log", "Network", "Page"] {
            self.call(s, &format!("{domain}.enable"), json!({}));
        }
        self.call(
            s,
            "Page.setLifecycleEventsEnabled",
            json!({"enabled": true}),
        );
        self.pending.clear();
        let navigated = self.call(s, "Page.navigate", json!({"url": url}));
        let loader = navigated["loaderId"].clone();

        // The page is done when it has loaded and Chromium itself reports its network idle
        // (`networkIdle`: no request for 500 ms) for this navigation: every request, console
        // error and exception it caused was sent before that event, on this ordered
        // connection. However long a loaded machine takes, up to the page-load bound.
        let mut visit = PageVisit::default();
        let mut events: Vec<Value> = std::mem::take(&mut self.pending);
        let deadline = Instant::now() + PAGE_LOAD;
        let done = |events: &[Value]| {
            let loaded = events
                .iter()
                .any(|e| is_event(e, &session, "Page.loadEventFired"));
            let idle = events.iter().any(|e| {
                is_event(e, &session, "Page.lifecycleEvent")
                    && e["params"]["name"] == "networkIdle"
                    && e["params"]["loaderId"] == loader
            });
            loaded && idle
        };
        while !done(&events) {
            assert!(
                Instant::now() < deadline,
                "{url} did not load and go quiet within {PAGE_LOAD:?}"
            );
            if let Some(m) = self.read() {
                events.push(m);
            }
        }
        visit.checks = self.call(
            s,
            "Runtime.evaluate",
            json!({"expression": check, "returnByValue": true}),
        )["result"]["value"]
            .clone();

        visit.screenshot = self.screenshot(s);
        events.append(&mut self.pending);

        for e in events.iter().filter(|e| e["sessionId"] == json!(session)) {
            visit.note(e, url);
        }
        self.call(None, "Target.closeTarget", json!({"targetId": target_id}));
        self.pending.clear();
        visit
    }

    /// A full-page screenshot (PNG) of session `s`'s page, the viewport as tall as the page.
    fn screenshot(&mut self, s: Option<&str>) -> Vec<u8> {
        let metrics = self.call(s, "Page.getLayoutMetrics", json!({}));
        let height = metrics["cssContentSize"]["height"]
            .as_f64()
            .unwrap_or(1000.0)
            .ceil() as u64;
        self.call(
            s,
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": VIEWPORT_WIDTH,
                "height": height.clamp(600, MAX_SCREENSHOT_HEIGHT),
                "deviceScaleFactor": 1,
                "mobile": false
            }),
        );
        let shot = self.call(
            s,
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }
}

fn is_event(m: &Value, session: &str, method: &str) -> bool {
    m["method"] == method && m["sessionId"] == session
}

/// Kills the child if launching fails half-way.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.next_id += 1;
        let close = json!({"id": self.next_id, "method": "Browser.close"});
        let _ = self.ws.send(Message::text(close.to_string()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `file://` URL for `path` (absolute, percent-encoding spaces and other unsafe bytes).
pub fn file_url(path: &Path) -> String {
    let abs = std::fs::canonicalize(path).unwrap();
    let mut url = String::from("file://");
    for b in abs.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}
