//! `baton demo` end to end, as a newcomer runs it: it must exit 0, show a failover, a
//! handoff and a resignation with measured times, lose no update, and clean up its
//! temporary folder.

use std::time::Duration;

#[path = "common/demo_run.rs"]
mod demo_run;

/// The demo takes under a minute; a busy two-core machine gets some margin.
const LIMIT: Duration = Duration::from_secs(85);

/// The figure on the summary line starting with `label`, e.g. `2.41` from
/// `  failover (SIGKILL → new active)           2.41 s   (…)`.
fn seconds_after(summary: &str, label: &str) -> Option<f64> {
    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with(label))?;
    let rest = line.split_once(')')?.1;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn the_demo_fails_over_hands_over_and_loses_nothing() {
    let (code, out) = demo_run::run_demo(&[], LIMIT);
    assert_eq!(code, Some(0), "exit code\n{out}");

    let summary = out
        .split_once("══ summary")
        .map(|(_, summary)| summary)
        .expect("a summary");
    let failover = seconds_after(summary, "failover").expect("a measured failover");
    let handoff = seconds_after(summary, "handoff").expect("a measured handoff");
    let resignation = seconds_after(summary, "resignation").expect("a measured resignation");
    assert!(
        failover > 0.0 && handoff > 0.0 && resignation > 0.0,
        "{summary}"
    );
    assert!(
        summary.contains(" lost 0,") && summary.contains("✅ 0 updates lost"),
        "{summary}"
    );
    assert!(
        summary.contains("most devices active at once: 1;"),
        "{summary}"
    );
    // The story went through Telegram like a user's: the bot answered /devices and took
    // /activate, and the timeline shows the crash and the lease running out.
    assert!(out.contains("user      /activate "), "{out}");
    assert!(out.contains("kill -KILL"), "{out}");

    let folder = out
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("folder"))
        .map(str::trim)
        .expect("the header names the folder");
    assert!(
        !std::path::Path::new(folder).exists(),
        "the temporary folder {folder} was removed"
    );
}
