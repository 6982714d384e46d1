//! Long-running commands, run until they show what a test waits for and
//! then stopped with Ctrl-C, as a user stops them.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a command printed before and after its Ctrl-C, and how it ended.
pub struct Interrupted {
    /// Standard output up to and including the line the test waited for
    /// (or everything within the wait, if that line never came).
    pub before: Vec<String>,
    /// Standard output after the Ctrl-C.
    pub after: Vec<String>,
    /// Everything written to standard error.
    pub stderr: String,
    /// Whether it exited with status 0 within 60 s of the Ctrl-C (killed otherwise).
    pub success: bool,
}

impl Interrupted {
    /// Whether the line waited for came.
    pub fn reached(&self, ready: impl Fn(&str) -> bool) -> bool {
        self.before.last().is_some_and(|l| ready(l))
    }
}

/// Runs `command` until a line of its standard output satisfies `ready`
/// (at most 120 s), then sends it SIGINT and collects the rest.
pub fn run_then_interrupt(mut command: Command, ready: impl Fn(&str) -> bool) -> Interrupted {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout_reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // Drained all along, so that a chatty log never blocks the command.
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut before = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let done = ready(&line);
        before.push(line);
        if done {
            break;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let exited_by = Instant::now() + Duration::from_secs(60);
    let after: Vec<String> = std::iter::from_fn(|| {
        lines
            .recv_timeout(exited_by.saturating_duration_since(Instant::now()))
            .ok()
    })
    .collect();
    while child.try_wait().expect("try_wait").is_none() && Instant::now() < exited_by {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Still running: killed, and `success` is false.
    let _ = child.kill();
    let status = child.wait().expect("wait");
    stdout_reader.join().expect("stdout reader");
    Interrupted {
        before,
        after,
        stderr: stderr_reader.join().expect("stderr reader"),
        success: status.success(),
    }
}
