//! `baton child-guard` on its own, with this test as "baton": it holds the write end of
//! the guard's stdin. The test process stays alive throughout, so only the closing pipe
//! can be what stops the group.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BATON: &str = env!("CARGO_BIN_EXE_baton");
const PATIENCE: Duration = Duration::from_secs(15);

fn guard(dir: &Path, grace_ms: u64, script: &str) -> Child {
    Command::new(BATON)
        .args(["child-guard", "--grace-ms", &grace_ms.to_string(), "--"])
        .args(["sh", "-c", script])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("baton child-guard starts")
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the guard did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    text
}

fn read_pid(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.ends_with('\n').then(|| text.trim().parse().ok())?
}

fn wait_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(pid) = read_pid(path) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// Waits (bounded) until the file at `path` has at least `count` lines.
fn wait_lines(path: &Path, count: usize) {
    let deadline = Instant::now() + PATIENCE;
    while line_count(path) < count {
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, not {count}",
            path.display(),
            line_count(path)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Exists and is not a zombie (an orphan reparented to a PID 1 that does not reap).
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
}

fn wait_dead(pids: &[i32]) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if pids.iter().all(|pid| !alive(*pid)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_closed_lifeline_stops_the_child_and_everything_it_started() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = "sleep 1000 & echo $! > grandchild; echo $$ > child; \
                  while true; do echo tick >> ticks; sleep 0.05; done";
    let mut guard = guard(dir.path(), 2_000, script);
    let child = wait_pid(&dir.path().join("child"));
    let grandchild = wait_pid(&dir.path().join("grandchild"));
    // Four turns of the child's loop (≥ 0.2 s) while baton lives: nothing stopped it.
    wait_lines(&dir.path().join("ticks"), 4);
    assert!(
        alive(child) && alive(grandchild),
        "running while baton lives"
    );

    drop(guard.stdin.take()); // "baton" dies: the kernel closes its end of the pipe
    let status = wait_exit(&mut guard);
    assert!(
        wait_dead(&[child, grandchild]),
        "child {child} or grandchild {grandchild} outlived baton"
    );
    assert!(!status.success(), "{status:?}");
    let said = stderr_of(&mut guard);
    assert!(said.contains("baton is gone"), "{said}");
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = "trap '' TERM; echo $$ > child; while true; do sleep 0.05; done";
    let mut guard = guard(dir.path(), 300, script);
    let child = wait_pid(&dir.path().join("child"));
    drop(guard.stdin.take());
    wait_exit(&mut guard);
    assert!(wait_dead(&[child]), "the stubborn child {child} survived");
    let said = stderr_of(&mut guard);
    assert!(said.contains("SIGKILL"), "{said}");
}

#[test]
fn the_guard_ends_as_its_child_ended() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut exits = guard(dir.path(), 1_000, "exit 7");
    assert_eq!(wait_exit(&mut exits).code(), Some(7));

    let mut killed = guard(dir.path(), 1_000, "kill -USR1 $$; sleep 5");
    assert_eq!(wait_exit(&mut killed).signal(), Some(libc::SIGUSR1));

    // A crash is reported the shell's way, not re-raised (no core dump blamed on baton).
    let mut crashed = guard(dir.path(), 1_000, "kill -SEGV $$; sleep 5");
    let status = wait_exit(&mut crashed);
    assert_eq!(status.code(), Some(128 + libc::SIGSEGV), "{status:?}");

    // The supervisor's stop: SIGTERM to the whole group while baton still lives.
    let mut stopped = guard(
        dir.path(),
        10_000,
        "echo $$ > stopped; while true; do sleep 0.05; done",
    );
    wait_pid(&dir.path().join("stopped"));
    let group = i32::try_from(stopped.id()).expect("pid");
    // SAFETY: kill(2) on the guard's own group (it leads it: process_group(0)).
    unsafe {
        libc::kill(-group, libc::SIGTERM);
    }
    assert_eq!(wait_exit(&mut stopped).signal(), Some(libc::SIGTERM));
}

#[test]
fn a_sigterm_to_the_guard_alone_reaches_the_child() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = "trap 'echo term > got-term; exit 0' TERM; echo $$ > child; while true; do sleep 0.05; done";
    let mut guard = guard(dir.path(), 10_000, script);
    wait_pid(&dir.path().join("child"));
    // SAFETY: kill(2) on the guard's pid only.
    unsafe {
        libc::kill(i32::try_from(guard.id()).expect("pid"), libc::SIGTERM);
    }
    assert_eq!(wait_exit(&mut guard).code(), Some(0));
    assert!(dir.path().join("got-term").exists());
}

#[test]
fn a_command_that_cannot_start_is_reported_with_127() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut guard = Command::new(BATON)
        .args(["child-guard", "--", "/nonexistent/mirror"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("guard starts");
    assert_eq!(wait_exit(&mut guard).code(), Some(127));
    let said = stderr_of(&mut guard);
    assert!(said.contains("cannot start /nonexistent/mirror"), "{said}");
}

/// baton's end of the output pipes closes with baton. The child must still get its clean
/// stop: it keeps printing while it stops (into the guard, which drains it), and the
/// guard's own words into the closed pipe must not stop the guard.
#[test]
fn when_baton_dies_its_closed_output_pipes_harm_neither_the_guard_nor_the_child() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = "trap 'i=0; while [ $i -lt 300 ]; do echo stopping $i; echo still $i >&2; \
                  i=$((i+1)); done; echo done > clean; exit 0' TERM; \
                  echo $$ > child; while true; do echo working; echo tick >> ticks; sleep 0.05; done";
    let mut guard = Command::new(BATON)
        .args(["child-guard", "--grace-ms", "5000", "--"])
        .args(["sh", "-c", script])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("baton child-guard starts");
    let child = wait_pid(&dir.path().join("child"));
    // "baton" dies: every pipe end it held closes, its output pipes first.
    drop(guard.stdout.take());
    drop(guard.stderr.take());
    // The child prints four more lines into the guard, which meets the closed pipes.
    let ticks = dir.path().join("ticks");
    let printed = line_count(&ticks);
    wait_lines(&ticks, printed + 4);
    drop(guard.stdin.take());
    wait_exit(&mut guard);
    assert!(wait_dead(&[child]), "the child {child} outlived baton");
    let clean = std::fs::read_to_string(dir.path().join("clean")).unwrap_or_default();
    assert_eq!(clean, "done\n", "the child finished its clean stop");
}
