//! `baton demo --story topics` end to end (issue 11): one forum, a project per topic on
//! Macs of their own. It must exit 0 only when every message typed in every topic reached
//! the stand-in mirror of that topic — counted from what the mirrors wrote, not from what
//! baton says — and the topic nobody served got exactly one reply.

use std::time::Duration;

#[path = "common/demo_run.rs"]
mod demo_run;

/// The story takes ~20 s; a busy two-core machine gets a wide margin.
const LIMIT: Duration = Duration::from_secs(120);

fn run_demo(args: &[&str]) -> (Option<i32>, String) {
    demo_run::run_demo(args, LIMIT)
}

/// The per-topic row of the summary for `topic`: its numbers, in column order
/// (sent, delivered, lost, duplicated, misrouted).
fn topic_row(summary: &str, topic: &str) -> Option<Vec<usize>> {
    let line = summary.lines().find(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(topic) && words.next().is_some_and(|w| w.parse::<i64>().is_err())
    })?;
    Some(
        line.split_whitespace()
            .skip(2)
            .take(5)
            .filter_map(|w| w.parse().ok())
            .collect(),
    )
}

#[test]
fn the_topics_demo_delivers_every_topic_to_its_own_mirror() {
    let (code, out) = run_demo(&["--story", "topics"]);
    assert_eq!(code, Some(0), "exit code\n{out}");
    let summary = out
        .split_once("══ summary")
        .map(|(_, summary)| summary)
        .expect("a summary");
    for topic in ["10", "20", "30", "40"] {
        let row = topic_row(summary, topic).unwrap_or_else(|| panic!("topic {topic}: {summary}"));
        let [sent, delivered, lost, _duplicated, misrouted] = row[..] else {
            panic!("topic {topic}'s row has five counts: {row:?}\n{summary}");
        };
        assert!(sent > 0, "topic {topic} got messages\n{summary}");
        assert_eq!(
            (delivered, lost, misrouted),
            (sent, 0, 0),
            "topic {topic}\n{summary}"
        );
    }
    assert!(
        summary.contains("topic 40 (served by nobody when the user wrote there): 1 reply"),
        "{summary}"
    );
    assert!(
        summary.contains("✅ 0 updates lost, 0 misrouted"),
        "{summary}"
    );
    assert!(
        summary.contains("most devices active at once: 1;"),
        "{summary}"
    );
    // The story went through Telegram as a user's would: /activate typed in a topic, the
    // bot telling a stopped owner's topic that it waits, the crash, the queued mail.
    assert!(out.contains("/activate "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("user@") && l.contains("/activate ")),
        "{out}"
    );
    assert!(out.contains("is offline: your messages wait"), "{out}");
    assert!(out.contains("kill -KILL"), "{out}");
    assert!(out.contains("messages that waited for it"), "{out}");
    let own = summary
        .lines()
        .find(|l| l.contains("latency p50: own topic"))
        .expect("the own-topic / via-the-folder latency line");
    assert!(!own.contains("(0 msgs)"), "both paths were measured: {own}");
}
