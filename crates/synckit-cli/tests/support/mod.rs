//! Shared by the end-to-end tests: the real `synckit` binary, and a `synckit serve` process
//! that is killed when the test lets go of it.
// Each test binary includes this module and uses its own part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_synckit");

/// How long a process may take to start, or to finish when it should end on its own.
pub const PROCESS_WAIT: Duration = Duration::from_secs(30);

/// A running `synckit serve`, killed on drop.
pub struct Hub {
    child: Child,
    /// `http://127.0.0.1:PORT`, from the first line the hub prints.
    pub url: String,
}

impl Hub {
    /// Start `synckit serve --listen 127.0.0.1:0 <args>` and wait for its address.
    pub fn start(args: &[&str]) -> Hub {
        Hub::start_at("127.0.0.1:0", args)
    }

    /// Start `synckit serve --listen <listen> <args>` and wait for its address.
    pub fn start_at(listen: &str, args: &[&str]) -> Hub {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", listen])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Owned before the wait, so a hub that never prints is killed by the drop.
        let mut hub = Hub {
            child,
            url: String::new(),
        };
        let line = rx
            .recv_timeout(PROCESS_WAIT)
            .expect("the hub did not start");
        hub.url = line
            .strip_prefix("synckit hub listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        hub
    }

    /// Kill the hub with SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Stop the hub with SIGTERM and return how it exited.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        self.child.wait().unwrap()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `synckit <args>` that should end on its own; killed and failed after [`PROCESS_WAIT`].
pub fn output_within(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PROCESS_WAIT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("synckit {args:?} did not end within {PROCESS_WAIT:?}");
        }
    }
}

/// Run `synckit [--config CONFIG] <args> --data <dir>` to the end.
pub fn node(dir: &Path, config: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command
        .args(args)
        .arg("--data")
        .arg(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// [`node`], failing the test with its stderr unless it succeeds; its stdout.
pub fn node_ok(dir: &Path, config: Option<&Path>, args: &[&str]) -> String {
    let out = node(dir, config, args);
    assert!(
        out.status.success(),
        "synckit {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
