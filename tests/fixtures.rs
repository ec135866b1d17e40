//! Golden fixtures: every `fixtures/*.jsonl` is replayed and its text transcript compared
//! with `fixtures/<name>.transcript`. `BATON_BLESS=1` rewrites the golden files instead —
//! then READ them: a blessed transcript is only as right as the person who read it. So
//! that a wrong transcript cannot pass silently, each fixture also has a behaviour check
//! below (`checks`), and a fixture without one fails.

use std::path::{Path, PathBuf};

use baton_sim::replay::{Fixture, Item, Replay, render_json, render_text, replay};
use mirror_baton::core::{Effect, Level, Moment, Role, TimerId};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Every fixture, sorted by name.
fn fixture_paths() -> Vec<(String, PathBuf)> {
    let mut paths: Vec<(String, PathBuf)> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures/ exists")
        .map(|entry| entry.expect("readable fixtures/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, path)
        })
        .collect();
    paths.sort();
    paths
}

fn run(path: &Path) -> (Fixture, Replay) {
    let fixture = Fixture::load(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let result = replay(&fixture);
    (fixture, result)
}

fn run_named(name: &str) -> (Fixture, Replay) {
    run(&fixtures_dir().join(format!("{name}.jsonl")))
}

fn first_difference(expected: &str, actual: &str) -> String {
    for (number, (want, got)) in expected.lines().zip(actual.lines()).enumerate() {
        if want != got {
            return format!("line {}:\n  golden: {want}\n  actual: {got}", number + 1);
        }
    }
    format!(
        "lengths differ: golden {} lines, actual {} lines",
        expected.lines().count(),
        actual.lines().count()
    )
}

#[test]
fn golden_transcripts_match() {
    let bless = std::env::var("BATON_BLESS").is_ok_and(|value| value == "1");
    let mut failures = Vec::new();
    let paths = fixture_paths();
    assert!(
        paths.len() >= 15,
        "expected at least 15 fixtures, found {}",
        paths.len()
    );
    for (name, path) in paths {
        let (fixture, result) = run(&path);
        let actual = render_text(&fixture.header, &result);
        let golden_path = path.with_extension("transcript");
        if bless {
            std::fs::write(&golden_path, &actual).expect("write golden transcript");
            eprintln!("BATON_BLESS=1: rewrote {} — read it", golden_path.display());
            continue;
        }
        match std::fs::read_to_string(&golden_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: transcript differs from {} at {}",
                golden_path.display(),
                first_difference(&expected, &actual)
            )),
            Err(_) => failures.push(format!(
                "{name}: no golden transcript {}; create it with \
                 `BATON_BLESS=1 cargo test --test fixtures` and read it before committing",
                golden_path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(if the change is intended: BATON_BLESS=1 cargo test --test fixtures, then \
         read the diff)",
        failures.join("\n")
    );
}

// ---- behaviour checks -------------------------------------------------------------

fn secs(s: u64) -> Moment {
    Moment(s * 1000)
}

fn active_times(result: &Replay) -> Vec<Moment> {
    result
        .transitions()
        .into_iter()
        .filter(|(_, _, to, _)| *to == Role::Active)
        .map(|(at, ..)| at)
        .collect()
}

fn never_entered(result: &Replay, role: Role) -> bool {
    result.first_entered(role).is_none()
}

fn writes(result: &Replay) -> usize {
    result
        .effects()
        .filter(|(_, effect)| matches!(effect, Effect::WriteRecord { .. }))
        .count()
}

fn notified(result: &Replay, level: Level, part: &str) -> bool {
    result.effects().any(|(_, effect)| {
        matches!(effect, Effect::Notify { level: l, message } if *l == level && message.contains(part))
    })
}

fn deletes(result: &Replay) -> Vec<String> {
    result
        .effects()
        .filter_map(|(_, effect)| match effect {
            Effect::DeleteFile { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// The moment of the first fixture input whose rendering contains `part`.
fn input_at(result: &Replay, part: &str) -> Moment {
    result
        .entries
        .iter()
        .find(|entry| matches!(&entry.item, Item::Input(event) if format!("{event:?}").contains(part)))
        .map(|entry| entry.at)
        .unwrap_or_else(|| panic!("no input mentions {part}"))
}

type Check = fn(&Replay);

fn checks() -> Vec<(&'static str, Check)> {
    vec![
        ("first_device_empty_group", |r| {
            assert_eq!(
                r.path(),
                [
                    Role::Registering,
                    Role::Standby,
                    Role::Contending,
                    Role::Active
                ]
            );
            assert_eq!(
                active_times(r),
                [secs(16)],
                "active exactly when the settle window ends"
            );
            assert_eq!((r.final_role, r.final_term), (Role::Active, 1));
        }),
        ("handoff_found_on_waking", |r| {
            // Simulator seed 11844: taking it at once made two devices act.
            assert!(never_entered(r, Role::Active), "never acts: {:?}", r.path());
            assert!(r.acting_terms().is_empty());
            let woke = input_at(r, "Woke");
            let contended = r.first_entered(Role::Contending).expect("claims the term");
            assert_eq!(contended, woke.plus(std::time::Duration::from_millis(64)));
            assert!(notified(
                r,
                Level::Info,
                "a handoff to this device (term 13) of unknown age"
            ));
            assert!(notified(
                r,
                Level::Info,
                "backing off: mini:/Users/ana/bot claims term 14"
            ));
            assert_eq!(r.final_role, Role::Standby);
        }),
        ("handoff_after_write_recovery", |r| {
            assert_eq!(r.path(), [Role::Registering, Role::Standby, Role::Active]);
            assert_eq!(active_times(r), [secs(40)], "at once when a write succeeds");
            assert_eq!((r.final_role, r.final_term), (Role::Active, 13));
        }),
        ("join_live_leader", |r| {
            assert_eq!(r.path(), [Role::Registering, Role::Standby]);
            assert!(r.acting_terms().is_empty());
        }),
        ("leader_crash_failover", crash_failover_check),
        ("clock_skew_plus_1h", crash_failover_check),
        ("clock_skew_minus_1h", crash_failover_check),
        ("two_contenders_one_term", |r| {
            assert!(
                r.first_entered(Role::Contending).is_some(),
                "it did contend"
            );
            assert!(never_entered(r, Role::Active), "it lost the tie");
            assert_eq!(r.final_role, Role::Standby);
            assert!(notified(
                r,
                Level::Info,
                "backing off: mini:/Users/ana/bot claims term 4"
            ));
        }),
        ("higher_claim_while_active", |r| {
            assert_eq!(active_times(r), [secs(16)]);
            let stepped_down = r
                .transitions()
                .into_iter()
                .find(|(_, from, to, _)| (*from, *to) == (Role::Active, Role::Standby))
                .expect("steps down");
            assert_eq!(
                stepped_down.0,
                secs(40),
                "at once when the higher claim arrives"
            );
            assert!(
                r.effects()
                    .any(|(at, e)| at == secs(40) && matches!(e, Effect::StopActing { .. }))
            );
            assert_eq!(r.final_role, Role::Standby);
        }),
        ("handoff_accepted", |r| {
            assert_eq!(
                r.path(),
                [
                    Role::Registering,
                    Role::Standby,
                    Role::Contending,
                    Role::Active,
                    Role::Yielding,
                    Role::Standby
                ]
            );
            assert_eq!(r.first_entered(Role::Yielding), Some(secs(60)));
            let handoff_written = r.effects().any(|(_, e)| matches!(e,
                Effect::WriteRecord { record } if record.handoff.as_ref().is_some_and(|h| h.term == 2 && h.target.starts_with("mini"))));
            assert!(handoff_written, "the handoff names mini and term 2");
            assert_eq!(r.final_role, Role::Standby);
        }),
        ("handoff_dead_target", |r| {
            assert_eq!(r.first_entered(Role::Yielding), Some(secs(60)));
            assert_eq!(
                active_times(r),
                [secs(16), secs(108)],
                "back after the 48 s timeout"
            );
            assert_eq!((r.final_role, r.final_term), (Role::Active, 3));
            assert!(notified(r, Level::Warn, "timed out"));
        }),
        ("resignation_fast_takeover", |r| {
            let handoff_seen = Moment(52_300);
            assert_eq!(
                active_times(r),
                [handoff_seen],
                "takes over the moment the handoff arrives"
            );
            assert!(
                never_entered(r, Role::Contending),
                "no election, no settle window"
            );
            assert_eq!((r.final_role, r.final_term), (Role::Active, 6));
        }),
        ("corrupt_then_truncated", |r| {
            assert_eq!(r.path(), [Role::Registering, Role::Standby]);
            let warnings = r
                .notifications()
                .into_iter()
                .filter(|n| n.starts_with("warn: ignoring"))
                .count();
            assert_eq!(
                warnings, 3,
                "corrupt, empty and truncated are each reported once"
            );
        }),
        ("icloud_duplicate", |r| {
            let deleted = deletes(r);
            assert_eq!(deleted.len(), 1, "{deleted:?}");
            assert!(
                deleted[0].starts_with("mbp-users-ana-bot-") && deleted[0].ends_with(" 2.json")
            );
            assert_eq!(
                (r.final_role, r.final_term),
                (Role::Active, 1),
                "a copy is not a claim"
            );
        }),
        ("icloud_stub_then_real", |r| {
            assert!(r.effects().any(|(_, e)| matches!(e, Effect::RequestDownload { name } if name.ends_with(".json.icloud"))));
            assert!(never_entered(r, Role::Active));
            assert!(
                never_entered(r, Role::Contending),
                "an unreadable record blocks a claim"
            );
            assert_eq!(r.final_role, Role::Standby);
        }),
        ("lost_notifications_backstop", |r| {
            let yielded = r.first_entered(Role::Yielding).expect("hands over");
            assert!(
                yielded >= secs(120) && yielded <= secs(180),
                "at the backstop ({yielded})"
            );
            let backstop_then = r
                .entries
                .iter()
                .any(|e| e.at == yielded && matches!(&e.item, Item::Fired(TimerId::Backstop)));
            assert!(backstop_then, "the handover follows the backstop's rescan");
            let handoff_to_mini = r.effects().any(|(_, e)| matches!(e,
                Effect::WriteRecord { record } if record.handoff.as_ref().is_some_and(|h| h.target.starts_with("mini"))));
            assert!(handoff_to_mini);
            assert_eq!(r.final_role, Role::Standby);
        }),
        ("sleep_past_lease", |r| {
            let woke = secs(3640);
            let after: Vec<&Effect> = r
                .effects()
                .filter(|(at, _)| *at >= woke)
                .map(|(_, e)| e)
                .collect();
            let stop = after
                .iter()
                .position(|e| matches!(e, Effect::StopActing { .. }))
                .expect("stops acting");
            assert!(
                !after[..stop]
                    .iter()
                    .any(|e| matches!(e, Effect::WriteRecord { .. } | Effect::StartActing { .. })),
                "nothing is written or served before acting stops"
            );
            assert!(
                !r.effects().any(|(at, _)| at > secs(41) && at < woke),
                "no timer fires while asleep"
            );
            assert_eq!(r.final_role, Role::Standby);
            assert_eq!(active_times(r), [secs(16)]);
        }),
        ("cloned_device_id", |r| {
            assert_eq!(r.exit.as_ref().map(|(code, _)| *code), Some(3));
            assert_eq!(writes(r), 0, "never writes over the twin's record");
            assert!(notified(r, Level::Error, "cloned or restored"));
        }),
        ("clone_appears_while_active", |r| {
            assert_eq!(active_times(r), [secs(16)]);
            assert_eq!(r.exit.as_ref().map(|(code, _)| *code), Some(3));
            assert!(
                r.effects()
                    .any(|(at, e)| at == secs(40) && matches!(e, Effect::StopActing { .. }))
            );
            let last_write = r
                .effects()
                .filter(|(_, e)| matches!(e, Effect::WriteRecord { .. }))
                .last();
            assert!(
                last_write.is_some_and(|(at, _)| at < secs(40)),
                "writes nothing once refused"
            );
        }),
        ("same_directory_twice", |r| {
            assert_eq!(r.exit.as_ref().map(|(code, _)| *code), Some(3));
            assert_eq!(
                writes(r),
                0,
                "never writes over the running process's record"
            );
            assert!(notified(r, Level::Error, "pid 3999"));
        }),
        ("restart_after_crash", |r| {
            assert!(r.exit.is_none());
            assert_eq!(
                r.first_entered(Role::Standby),
                Some(Moment(16_500)),
                "after the watch"
            );
            let first_write = r.effects().find_map(|(_, e)| match e {
                Effect::WriteRecord { record } => Some(record.seq),
                _ => None,
            });
            assert_eq!(
                first_write,
                Some(79),
                "continues the crashed run's seq (78)"
            );
            assert_eq!((r.final_role, r.final_term), (Role::Active, 3));
        }),
        ("same_host_pid_probe", |r| {
            assert!(
                r.effects()
                    .any(|(_, e)| matches!(e, Effect::ProbePid { pid: 5123, .. }))
            );
            let probed = input_at(r, "PidProbed");
            let contended = r.first_entered(Role::Contending).expect("fails over");
            assert!(
                contended < secs(80),
                "well before the 60 s lease after 20 s: {contended}"
            );
            assert!(contended >= probed);
            assert_eq!(r.final_role, Role::Active);
        }),
        ("namesake_mac_no_pid_probe", |r| {
            assert!(
                !r.effects()
                    .any(|(_, e)| matches!(e, Effect::ProbePid { .. })),
                "a pid from another boot is never probed"
            );
            // The leader's record last changed at 20 s; only its lease can end it.
            let lapse = secs(20).plus(mirror_baton::core::Timing::default().liveness_active);
            let contended = r.first_entered(Role::Contending).expect("fails over");
            assert!(contended >= lapse, "not before the lease: {contended}");
            assert_eq!(r.final_role, Role::Active);
        }),
        ("telegram_conflict", |r| {
            assert!(
                r.effects()
                    .any(|(at, e)| at == secs(30) && matches!(e, Effect::PauseActing { .. }))
            );
            assert_eq!(
                r.final_role,
                Role::Active,
                "one 409 with fresh peers is no reason to step down"
            );
        }),
    ]
}

fn crash_failover_check(r: &Replay) {
    // The leader's record last changed at 42 s; the constants are the simulator's.
    let timing = mirror_baton::core::Timing::default();
    let lapse = secs(42).plus(timing.liveness_active);
    let active = active_times(r);
    assert_eq!(active.len(), 1, "{active:?}");
    let contended = r.first_entered(Role::Contending).expect("contends");
    assert!(
        contended >= lapse && contended <= lapse.plus(timing.failover_jitter.max()),
        "after the lease, within the jitter: {contended}"
    );
    assert_eq!(active[0], contended.plus(timing.settle_window));
    assert_eq!(r.final_term, 4);
    assert_eq!(r.final_role, Role::Active);
}

#[test]
fn every_fixture_behaves_as_its_description_says() {
    let checks = checks();
    let mut unchecked = Vec::new();
    for (name, path) in fixture_paths() {
        match checks.iter().find(|(check_name, _)| *check_name == name) {
            Some((_, check)) => {
                let (_, result) = run(&path);
                let outcome = std::panic::catch_unwind(|| check(&result));
                if let Err(panic) = outcome {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    panic!("fixture {name}: {message}");
                }
            }
            // Recorded fixtures (`recorded_*`) show real sequences; they need only replay.
            None if name.starts_with("recorded_") => {}
            None => unchecked.push(name),
        }
    }
    assert!(
        unchecked.is_empty(),
        "fixtures without a behaviour check in tests/fixtures.rs: {unchecked:?}"
    );
}

/// Drops what may differ between skewed runs: comments and written_at values.
fn decisions(transcript: &str) -> String {
    transcript
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| match line.find("written_at=") {
            Some(index) => {
                let rest = &line[index + "written_at=".len()..];
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                format!("{}written_at=*{}", &line[..index], &rest[digits..])
            }
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn clock_skew_changes_no_decision() {
    let render = |name: &str| {
        let (fixture, result) = run_named(name);
        render_text(&fixture.header, &result)
    };
    let unskewed = render("leader_crash_failover");
    for skewed in ["clock_skew_plus_1h", "clock_skew_minus_1h"] {
        let skewed_text = render(skewed);
        assert_ne!(
            skewed_text, unskewed,
            "{skewed} must actually differ in written_at"
        );
        assert_eq!(
            decisions(&skewed_text),
            decisions(&unskewed),
            "{skewed} decided differently"
        );
    }
}

#[test]
fn json_transcripts_are_json_lines_ending_in_a_summary() {
    for (name, path) in fixture_paths() {
        let (_, result) = run(&path);
        let text = render_json(&result);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}")))
            .collect();
        let last = lines.last().expect("a summary");
        assert_eq!(
            last["end"]["role"],
            serde_json::json!(result.final_role),
            "{name}"
        );
        assert_eq!(lines.len(), result.effects().count() + 1, "{name}");
        assert!(lines.iter().all(|line| line["at_ms"].is_u64()), "{name}");
    }
}

#[test]
fn replays_are_deterministic() {
    for (name, path) in fixture_paths() {
        let (fixture, first) = run(&path);
        let second = replay(&fixture);
        assert_eq!(first, second, "{name}");
    }
}
