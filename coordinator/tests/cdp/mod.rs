//! A small Chrome DevTools Protocol client for the browser tests: headless Chromium started with
//! `--remote-debugging-pipe` (commands as NUL-terminated JSON on fd 3, answers on fd 4), so no
//! chromedriver, websocket or network port is involved. One page (tab) per [`Page`]; every
//! console message, uncaught exception and browser log entry of level error is collected.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// Where Chromium is: $VEPHYS_CHROMIUM, else `chromium` (Debian's package, which
/// scripts/chromium.sh installs) on PATH.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("VEPHYS_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no Chromium found: the browser tests need Debian's `chromium` package; run \
         scripts/chromium.sh (scripts/test.sh does) or set VEPHYS_CHROMIUM"
    );
}

pub struct Browser {
    child: Child,
    to_browser: std::fs::File,
    from_browser: Receiver<Value>,
    next_id: u64,
    /// Events that arrived while waiting for an answer, by session.
    pub events: Arc<Mutex<Vec<Value>>>,
    _profile: tempfile::TempDir,
}

/// A pipe whose ends survive only where they are dup2'ed (O_CLOEXEC on both).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Starts headless Chromium with a fresh profile and no network access of its own.
    pub fn start() -> Browser {
        use std::os::fd::AsRawFd;
        let profile = tempfile::tempdir().unwrap();
        let (cmd_read, cmd_write) = pipe();
        let (out_read, out_write) = pipe();
        let (r, w) = (cmd_read.as_raw_fd(), out_write.as_raw_fd());
        let mut command = Command::new(chromium());
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--disable-dev-shm-usage",
                "--disable-breakpad",
                "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
                "--password-store=basic",
                "--use-mock-keychain",
                "--mute-audio",
                "--hide-scrollbars",
                "--window-size=1400,1000",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        unsafe {
            command.pre_exec(move || {
                // move both ends out of the way first, so neither dup2 clobbers the other
                let r2 = libc::fcntl(r, libc::F_DUPFD_CLOEXEC, 10);
                let w2 = libc::fcntl(w, libc::F_DUPFD_CLOEXEC, 10);
                if r2 < 0 || w2 < 0 || libc::dup2(r2, 3) < 0 || libc::dup2(w2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        drop(cmd_read);
        drop(out_write);
        let (tx, rx) = channel();
        let reader = std::fs::File::from(out_read);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut message = Vec::new();
            loop {
                message.clear();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if message.last() == Some(&0) {
                            message.pop();
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&message) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Browser {
            child,
            to_browser: std::fs::File::from(cmd_write),
            from_browser: rx,
            next_id: 0,
            events: Arc::new(Mutex::new(Vec::new())),
            _profile: profile,
        }
    }

    /// Sends a command (to the browser, or to a page's session) and waits for its answer.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params)
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    /// As `call`, but chromium's refusal comes back as its error object (e.g. an evaluation
    /// that raced a navigation: "Inspected target navigated or closed").
    pub fn try_call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = Value::from(s);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_browser.recv_timeout(left) {
                Ok(v) if v["id"].as_u64() == Some(id) => {
                    if let Some(e) = v.get("error") {
                        return Err(e.clone());
                    }
                    return Ok(v["result"].clone());
                }
                Ok(v) => self.events.lock().unwrap().push(v),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("chromium did not answer {method} within 60 s")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("chromium exited (while {method})"),
            }
        }
    }

    /// Takes events that arrived while nothing was waiting.
    pub fn drain(&mut self) {
        while let Ok(v) = self.from_browser.try_recv() {
            self.events.lock().unwrap().push(v);
        }
    }

    /// A new tab with the page, runtime and log domains on.
    pub fn page(&mut self) -> Page {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        let session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            self.call(Some(&session), domain, json!({}));
        }
        self.call(
            Some(&session),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        Page { session }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Page {
    pub session: String,
}

impl Page {
    pub fn call(&self, b: &mut Browser, method: &str, params: Value) -> Value {
        b.call(Some(&self.session), method, params)
    }

    /// Evaluates `expression` (awaiting a promise) and returns its value.
    pub fn eval(&self, b: &mut Browser, expression: &str) -> Value {
        let r = self.call(
            b,
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("`{expression}` threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy, or fails after `secs` seconds.
    pub fn wait_for(&self, b: &mut Browser, expression: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            // an evaluation that meets the navigation it waits for is answered with an error:
            // not yet, ask again
            let r = b.try_call(
                Some(&self.session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            );
            if let Ok(r) = r {
                if r.get("exceptionDetails").is_none() && is_truthy(&r["result"]["value"]) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "`{expression}` did not become true within {secs} s (page {})",
                self.eval(b, "location.href")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Opens `url` and waits until the document and the images in view have loaded.
    pub fn open(&self, b: &mut Browser, url: &str) {
        let r = self.call(b, "Page.navigate", json!({"url": url}));
        if let Some(e) = r.get("errorText") {
            panic!("cannot open {url}: {e}");
        }
        self.settle(b);
    }

    /// Waits for the current navigation: document complete, visible images loaded.
    pub fn settle(&self, b: &mut Browser) {
        std::thread::sleep(Duration::from_millis(50));
        self.wait_for(b, "document.readyState === 'complete'", 30);
        self.wait_for(
            b,
            "[...document.images].filter(i => { const r = i.getBoundingClientRect(); \
             return r.bottom > 0 && r.top < innerHeight && r.width > 0; }).every(i => i.complete)",
            30,
        );
    }

    /// Saves a PNG screenshot of the page (the whole page, up to 4000 px tall).
    pub fn screenshot(&self, b: &mut Browser, path: &Path) {
        let height = self
            .eval(b, "Math.min(4000, document.documentElement.scrollHeight)")
            .as_f64()
            .unwrap_or(1000.0);
        let shot = self.call(
            b,
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": 1400, "height": height, "scale": 1}}),
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Presses a key (`ArrowRight`, `x`, `/` …) as a person would.
    pub fn press(&self, b: &mut Browser, key: &str) {
        let (code, vk) = match key {
            "ArrowLeft" => ("ArrowLeft", 37),
            "ArrowUp" => ("ArrowUp", 38),
            "ArrowRight" => ("ArrowRight", 39),
            "ArrowDown" => ("ArrowDown", 40),
            "Enter" => ("Enter", 13),
            k => (k, k.to_ascii_uppercase().chars().next().unwrap() as i64),
        };
        let text = if key.chars().count() == 1 { key } else { "" };
        let mut down =
            json!({"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": vk});
        if !text.is_empty() {
            down["text"] = Value::from(text);
        }
        if key == "Enter" {
            down["text"] = Value::from("\r");
        }
        self.call(b, "Input.dispatchKeyEvent", down);
        self.call(
            b,
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": vk}),
        );
    }

    /// Console errors, uncaught exceptions and error log entries of this page so far, and
    /// forgets them.
    pub fn errors(&self, b: &mut Browser) -> Vec<String> {
        b.drain();
        let mut events = b.events.lock().unwrap();
        let mut out = Vec::new();
        events.retain(|e| {
            if e["sessionId"].as_str() != Some(self.session.as_str()) {
                return true;
            }
            let p = &e["params"];
            match e["method"].as_str() {
                Some("Runtime.consoleAPICalled")
                    if p["type"] == "error" || p["type"] == "assert" =>
                {
                    out.push(format!("console.{}: {}", p["type"], p["args"]));
                }
                Some("Runtime.exceptionThrown") => {
                    out.push(format!("exception: {}", p["exceptionDetails"]));
                }
                Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                    out.push(format!(
                        "log: {} {}",
                        p["entry"]["text"],
                        p["entry"]["url"].as_str().unwrap_or("")
                    ));
                }
                _ => {}
            }
            false
        });
        out
    }
}

fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}
