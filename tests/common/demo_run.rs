//! Runs `baton demo` as a newcomer does (no time-scale override), with a time limit:
//! shared by the demo's end-to-end tests.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `baton demo ARGS`; returns (exit code, stdout). Panics with the output so far
/// when it takes longer than `limit`.
pub fn run_demo(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("demo")
        .args(args)
        .env_remove("BATON_TIME_SCALE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baton demo starts");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let out = reader.join().unwrap_or_default();
            panic!("the demo took longer than {limit:?}:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().expect("stdout reader");
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    println!("{out}\n{err}\n(took {:?})", started.elapsed());
    (status.code(), out)
}
