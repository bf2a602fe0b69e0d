//! Helpers for tests that run the real binaries as separate processes: the coordinator, the
//! worker (real libtorch, real EfficientNet-Lite0 weights) and the `vephys` CLI.

#![allow(dead_code)]

pub mod cluster;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A binary of this workspace, built by `cargo test --workspace` next to the CLI's.
pub fn binary(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_vephys"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing; run the tests with `cargo test --workspace` (scripts/test.sh), which builds it",
        path.display()
    );
    path
}

/// The real EfficientNet-Lite0 weights scripts/setup.sh converts.
pub fn weights_dir() -> PathBuf {
    let dir = std::env::var_os("VEPHYS_WEIGHTS_DIR")
        .map(PathBuf::from)
        .expect("VEPHYS_WEIGHTS_DIR is not set; run the tests through scripts/test.sh");
    assert!(
        dir.join("efficientnet_lite0.safetensors").is_file(),
        "no efficientnet_lite0.safetensors in {}; run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// `vephys ARGS` with a clean environment for the flags tests set themselves.
pub fn vephys(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vephys"))
        .args(args)
        .env_remove("VEPHYS_COORDINATOR")
        .env_remove("VEPHYS_TOKEN")
        .env_remove("VEPHYS_DATA_DIR")
        .env("NO_COLOR", "1")
        .output()
        .expect("run vephys")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A child process killed when the test ends, whatever happens.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `bin ARGS` with `env`, its output going to `log`, in a process group of its own
    /// (so `signal_group` reaches it and its children, as a terminal's Ctrl-C would).
    pub fn start(bin: &Path, args: &[String], env: &[(&str, String)], log: &Path) -> Proc {
        let file = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc {
            child: cmd
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display())),
            log: log.to_path_buf(),
        }
    }

    pub fn signal(&self, signal: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// `signal` to every process of this one's group.
    pub fn signal_group(&self, signal: i32) {
        unsafe {
            libc::kill(-(self.child.id() as i32), signal);
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns Some or `limit` passes.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A free loopback port (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An exported model's directory written by scripts/python/make_export_fixtures.py.
pub fn exported(name: &str) -> PathBuf {
    let fixtures = std::env::var_os("VEPHYS_FIXTURES")
        .map(PathBuf::from)
        .expect("VEPHYS_FIXTURES is not set; run the tests through scripts/test.sh");
    let dir = fixtures.join("exported").join(name);
    assert!(
        dir.join("model.json").is_file(),
        "{} is missing; run scripts/test.sh, which exports it",
        dir.display()
    );
    dir
}
