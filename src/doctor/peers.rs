//! Peers and clocks: whether every other device's record is fresh, how long records
//! take to reach this machine, and whether this machine's clocks can be trusted.
//!
//! The one-way delay is a wall-clock estimate: the moment the sync tool put a peer's
//! record on this disk (the file's status-change time, which no sync tool carries over)
//! minus the moment its writer's clock says it wrote it. It is the delay PLUS the offset
//! between the two clocks, so a negative figure means this clock is behind the peer's.

use std::time::Duration;

use super::check::{Check, Setup, Verdict};
use super::os::OsProbes;
use crate::adapters::clock;
use crate::core::election;
use crate::core::record::{self, DeviceRecord, NameKind, Status};

/// A peer's record as found on this disk.
struct Seen {
    record: DeviceRecord,
    /// Now minus the writer's wall clock at its last write (its clock, not ours).
    age_ms: i128,
    /// When it reached this disk minus when its writer wrote it: delay + clock offset.
    lag_ms: Option<i128>,
}

pub fn checks(setup: &Setup, os: &dyn OsProbes) -> Vec<Check> {
    let seen = read_peers(setup);
    vec![peers(setup, &seen), clocks(setup, os, &seen)]
}

fn read_peers(setup: &Setup) -> Vec<Seen> {
    let dir = setup.devices_dir();
    let now_ms = i128::from(clock::wall_ms());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut seen: Vec<Seen> = entries
        .flatten()
        .take(100_000)
        .filter(|e| {
            matches!(
                record::classify_name(&e.file_name().to_string_lossy()),
                NameKind::Record { .. }
            )
        })
        .filter_map(|entry| {
            let observation = crate::adapters::store::observe_path(&entry.path(), String::new());
            let crate::core::FileState::Contents { text } = observation.state else {
                return None;
            };
            let record = record::parse_record(text.as_bytes()).ok()?;
            if record.device_id == setup.device_id {
                return None;
            }
            let written = i128::from(record.written_at_ms);
            Some(Seen {
                age_ms: now_ms - written,
                lag_ms: arrived_ms(&entry.path()).map(|arrived| arrived - written),
                record,
            })
        })
        .collect();
    seen.sort_by(|a, b| a.record.device_id.cmp(&b.record.device_id));
    seen
}

/// The file's status-change time (ctime) in Unix ms: when it was put on this disk.
fn arrived_ms(path: &std::path::Path) -> Option<i128> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(i128::from(meta.ctime()) * 1000 + i128::from(meta.ctime_nsec()) / 1_000_000)
}

fn seconds(ms: i128) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn peers(setup: &Setup, seen: &[Seen]) -> Check {
    if seen.is_empty() {
        return Check::new(
            "peers",
            Verdict::Pass,
            "no other device's record in the folder yet",
        );
    }
    let settle_bound_ms = i128::from(setup.timing.settle_bound().as_millis() as u64);
    let (mut stale, mut slow, mut details) = (Vec::new(), Vec::new(), Vec::new());
    for peer in seen {
        let rec = &peer.record;
        let liveness = election::liveness_timeout(rec.status, &setup.timing);
        let allowance = i128::from(
            setup
                .timing
                .skew_allowance
                .min(Duration::from_secs(600))
                .as_millis() as u64,
        );
        let is_stale = rec.status != Status::Stopped
            && peer.age_ms > i128::from(liveness.as_millis() as u64) + allowance;
        let lag = peer.lag_ms.map_or("?".into(), seconds);
        details.push(format!(
            "{} ({} term {}): written {} ago by its clock; reached this disk {lag} after it was written{}",
            rec.device_id,
            rec.status.as_str(),
            rec.term,
            seconds(peer.age_ms),
            if is_stale { " — STALE" } else { "" }
        ));
        if is_stale {
            stale.push(rec.device_id.clone());
        }
        if peer.lag_ms.is_some_and(|lag| lag > settle_bound_ms) {
            slow.push(rec.device_id.clone());
        }
    }
    verdict_for_peers(setup, seen.len(), &stale, &slow, details)
}

fn verdict_for_peers(
    setup: &Setup,
    count: usize,
    stale: &[String],
    slow: &[String],
    details: Vec<String>,
) -> Check {
    let bound = setup.timing.settle_bound().as_secs_f64();
    if !stale.is_empty() {
        return Check::new(
            "peers",
            Verdict::Warn,
            format!(
                "{} of {count} peer record(s) stale: {}",
                stale.len(),
                stale.join(", ")
            ),
        )
        .details(details)
        .fix(
            "a stale record's baton is not running, or its sync is stuck: look at that machine \
             (`baton status` there); a record unchanged for a day is removed by the active device",
        )
        .odd();
    }
    if !slow.is_empty() {
        return Check::new(
            "peers",
            Verdict::Warn,
            format!(
                "records from {} took longer than the {bound:.0} s settle bound to arrive (delay + clock offset)",
                slow.join(", ")
            ),
        )
        .details(details)
        .fix("beyond the bound two devices may briefly serve at once: speed the sync up (Syncthing: fsWatcherDelayS 1) or check the clocks below")
        .odd();
    }
    Check::new(
        "peers",
        Verdict::Pass,
        format!("{count} peer record(s), all fresh"),
    )
    .details(details)
}

fn clocks(setup: &Setup, os: &dyn OsProbes, seen: &[Seen]) -> Check {
    let clock = os.sleep_clock();
    if let Err(why) = &clock.works {
        return Check::new(
            "clocks",
            Verdict::Fail,
            format!(
                "the sleep-counting clock ({}) cannot be used: {why}",
                clock.name
            ),
        )
        .fix("leases would stop across a sleep: report this machine's OS version in an issue");
    }
    let behind = seen
        .iter()
        .filter_map(|peer| peer.lag_ms.map(|lag| (lag, &peer.record.device_id)))
        .min();
    let base = format!("{} counts sleep", clock.name);
    let caveat = "offsets are estimated from records' arrival, so only a clock BEHIND a peer's shows; skew matters only at start-up (2 h allowance) and in `baton status` read from the folder";
    match behind {
        Some((lag, peer)) if lag < 0 => {
            let behind_ms = -lag;
            let allowance = i128::from(setup.timing.skew_allowance.as_millis() as u64);
            let verdict = if behind_ms >= allowance {
                Verdict::Fail
            } else if behind_ms >= 60_000 {
                Verdict::Warn
            } else {
                Verdict::Pass
            };
            let check = Check::new(
                "clocks",
                verdict,
                format!(
                    "{base}; this clock is at least {} behind {peer}'s",
                    seconds(behind_ms)
                ),
            )
            .details(vec![caveat.into()]);
            if verdict == Verdict::Pass {
                check
            } else {
                check.fix("turn on automatic date and time (System Settings → General → Date & Time) on both machines")
            }
        }
        Some(_) => Check::new(
            "clocks",
            Verdict::Pass,
            format!("{base}; no sign that this clock is behind a peer's"),
        )
        .details(vec![caveat.into()]),
        None => Check::new(
            "clocks",
            Verdict::Pass,
            format!("{base}; no peer to compare with"),
        ),
    }
}
