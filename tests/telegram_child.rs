//! The child supervisor with real processes: restart with doubling back-off and the extra
//! environment; graceful stop (SIGTERM), SIGKILL after the grace, the whole group gone.

use std::path::Path;
use std::time::Duration;

use mirror_baton::adapters::child::{ChildEvent, ChildSpec, ChildSupervisor};
use tokio::sync::mpsc;

const PATIENCE: Duration = Duration::from_secs(30);

fn spec(dir: &Path, script: &str) -> ChildSpec {
    let mut spec = ChildSpec::new("sh", vec!["-c".into(), script.into()], dir);
    spec.extra_env = vec![
        (
            "TELEGRAM_UPDATES_URL".into(),
            "http://baton:pw@127.0.0.1:1/updates".into(),
        ),
        ("BATON_DEVICE_ID".into(), "mac_<1>".into()),
    ];
    spec.backoff_initial = Duration::from_millis(20);
    spec.backoff_max = Duration::from_millis(80);
    spec
}

async fn next(events: &mut mpsc::Receiver<ChildEvent>) -> ChildEvent {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("an event in time")
        .expect("supervisor alive")
}

/// Waits (bounded) until the file at `path` has at least `count` lines.
async fn wait_for_lines(path: &Path, count: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let lines = std::fs::read_to_string(path).map_or(0, |text| text.lines().count());
        if lines >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} has {lines} lines, not {count}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_for_file(path: &Path) -> String {
    for _ in 0..1000 {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", path.display());
}

/// Starts a supervisor for `spec` and waits until the child wrote `<dir>/ready`.
async fn start_until_ready(
    spec: ChildSpec,
    dir: &Path,
) -> (ChildSupervisor, mpsc::Receiver<ChildEvent>) {
    let (events_tx, mut events) = mpsc::channel(64);
    let supervisor = ChildSupervisor::spawn(spec, Some(events_tx));
    supervisor.start().await;
    assert!(matches!(
        next(&mut events).await,
        ChildEvent::Started { .. }
    ));
    wait_for_file(&dir.join("ready")).await;
    (supervisor, events)
}

/// Alive = exists and is not a zombie (PID 1 in a container may not reap orphans).
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test]
async fn restarts_with_doubling_capped_back_off_and_the_extra_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = r#"echo "$TELEGRAM_UPDATES_URL $BATON_DEVICE_ID" >> runs; exit 3"#;
    let (events_tx, mut events) = mpsc::channel(64);
    let supervisor = ChildSupervisor::spawn(spec(dir.path(), script), Some(events_tx));
    supervisor.start().await;
    let mut delays = Vec::new();
    while delays.len() < 4 {
        match next(&mut events).await {
            ChildEvent::Exited { status, .. } => assert!(status.contains('3'), "{status}"),
            ChildEvent::RestartScheduled { delay } => delays.push(delay.as_millis()),
            ChildEvent::Started { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(delays, vec![20, 40, 80, 80]);
    supervisor.shutdown(Duration::from_secs(1)).await;
    let runs = std::fs::read_to_string(dir.path().join("runs")).expect("the child ran in DIR");
    assert!(runs.lines().count() >= 4);
    assert!(
        runs.lines()
            .all(|l| l == "http://baton:pw@127.0.0.1:1/updates mac_<1>"),
        "{runs}"
    );
}

/// The spec as `baton run` builds it: CMD under `baton child-guard`.
fn guarded(mut spec: ChildSpec) -> ChildSpec {
    spec.guard = Some(env!("CARGO_BIN_EXE_baton").into());
    spec.guard_grace = Duration::from_secs(2);
    spec
}

#[tokio::test]
async fn graceful_stop_sends_sigterm_and_does_not_restart() {
    graceful_stop(false).await;
}

#[tokio::test]
async fn graceful_stop_of_a_guarded_child() {
    graceful_stop(true).await;
}

async fn graceful_stop(guard: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    // The trap lingers, so a second SIGTERM would be counted too.
    let script = "echo $$ >> runs; trap 'echo term >> got_term; sleep 0.3; exit 0' TERM; echo ready > ready; while true; do echo tick >> ticks; sleep 0.05; done";
    let mut spec = spec(dir.path(), script);
    if guard {
        spec = guarded(spec);
    }
    let (supervisor, mut events) = start_until_ready(spec, dir.path()).await;
    // It keeps running: nothing (the guard's lifeline least of all) ends it early. Seen
    // from the child itself: ten turns of its loop (≥ 0.5 s) after it became ready.
    wait_for_lines(&dir.path().join("ticks"), 10).await;
    assert!(
        events.try_recv().is_err(),
        "no exit or restart while running"
    );
    let runs = std::fs::read_to_string(dir.path().join("runs")).expect("runs");
    assert_eq!(runs.lines().count(), 1, "started once: {runs}");
    supervisor.stop(Duration::from_secs(5)).await;
    match next(&mut events).await {
        ChildEvent::Exited { status, .. } => assert!(status.contains("exit status: 0"), "{status}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(next(&mut events).await, ChildEvent::Stopped);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("got_term")).expect("trap ran"),
        "term\n",
        "exactly one SIGTERM reached the child"
    );
    supervisor.start().await;
    assert!(
        matches!(next(&mut events).await, ChildEvent::Started { .. }),
        "Start after Stop runs it again"
    );
    supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn sigkill_after_the_grace_and_the_whole_group_is_gone() {
    sigkill_after_the_grace(false).await;
}

#[tokio::test]
async fn sigkill_after_the_grace_reaches_a_guarded_group() {
    sigkill_after_the_grace(true).await;
}

async fn sigkill_after_the_grace(guard: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    // The grandchild ignores SIGTERM and outlives its parent unless the group is killed.
    let script = "sh -c 'trap \"\" TERM; echo $$ > grandchild; while true; do sleep 0.05; done' & \
                  trap '' TERM; echo ready > ready; while true; do sleep 0.05; done";
    let mut spec = spec(dir.path(), script);
    if guard {
        spec = guarded(spec);
    }
    let (supervisor, mut events) = start_until_ready(spec, dir.path()).await;
    let grandchild = wait_for_file(&dir.path().join("grandchild"))
        .await
        .trim()
        .to_owned();
    assert!(alive(&grandchild));
    supervisor.shutdown(Duration::from_millis(200)).await;
    match next(&mut events).await {
        ChildEvent::Exited { status, .. } => assert!(status.contains("signal: 9"), "{status}"),
        other => panic!("unexpected {other:?}"),
    }
    // SIGKILL to the group is delivered at once but taken asynchronously: on a busy
    // machine the grandchild may still be dying when its parent has been reaped.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while alive(&grandchild) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !alive(&grandchild),
        "the grandchild was killed with the group"
    );
}

#[tokio::test]
async fn a_vanished_baton_binary_runs_the_child_unguarded_rather_than_not_at_all() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = spec(dir.path(), "echo ready > ready; sleep 1000");
    spec.guard = Some(dir.path().join("replaced-by-an-upgrade/baton"));
    let (supervisor, _events) = start_until_ready(spec, dir.path()).await;
    supervisor.shutdown(Duration::from_secs(1)).await;
}

/// The child's output is a pipe baton drains at once: a child printing a lot (long
/// lines, binary) runs to its end without waiting on baton, guarded or not, and its
/// state is published (one start, then not running).
#[tokio::test]
async fn a_child_printing_a_lot_never_waits_on_baton() {
    for guard in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        // ~2 MB on each stream: far beyond a pipe's 64 KiB buffer.
        let script = "i=0; while [ $i -lt 20 ]; do head -c 100000 /dev/urandom; \
                      head -c 100000 /dev/zero | tr '\\0' x >&2; i=$((i+1)); done; \
                      echo done > finished; exit 4";
        let mut spec = spec(dir.path(), script);
        spec.backoff_initial = Duration::from_secs(60);
        if guard {
            spec = guarded(spec);
        }
        let (events_tx, mut events) = mpsc::channel(64);
        let supervisor = ChildSupervisor::spawn(spec, Some(events_tx));
        let state = supervisor.state();
        supervisor.start().await;
        loop {
            match next(&mut events).await {
                ChildEvent::Exited { status, .. } => {
                    assert!(status.contains('4'), "{status}");
                    break;
                }
                ChildEvent::Started { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(dir.path().join("finished").exists(), "guard: {guard}");
        let state = *state.borrow();
        assert_eq!((state.starts, state.running), (1, false));
        supervisor.shutdown(Duration::from_secs(1)).await;
    }
}
