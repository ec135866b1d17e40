//! The election rules: pure functions over the peer records this device has seen and the
//! local moments at which it saw them change.
//!
//! Owns: liveness (judged ONLY by the local clock at which a peer's `seq` was seen to
//! change — never by comparing another machine's wall clock), who leads, who may claim,
//! who a handoff goes to, and the device table. Must never: mutate anything, read a
//! clock, or depend on iteration order of anything but sorted keys (every device must
//! compute the same answer from the same files).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::record::{ActivationRequest, DeviceRecord, Handoff, Status, TERM_MAX};
use super::timers::{Moment, Timing};

/// What this device knows about one peer's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// File stem (the key in the devices folder).
    pub stem: String,
    /// The last record read from the file that parsed.
    pub record: DeviceRecord,
    /// Local moment at which `record.seq` was last seen to change (or presumed to have,
    /// at start-up: see [`presumed_change`]).
    pub changed_at: Moment,
    /// Whether the file was there at the last look (a deleted file's peer is kept until
    /// its liveness lapses: a vanished folder must not make us forget anyone).
    pub present: bool,
}

/// The peers, keyed by file stem; never contains this device.
pub type Peers = BTreeMap<String, PeerView>;

/// A claim's rank: higher term wins, then the larger device id (a total order every
/// device agrees on).
pub type ClaimKey<'a> = (u64, &'a str);

/// How long a record of this status stays live without its seq changing.
pub fn liveness_timeout(status: Status, timing: &Timing) -> Duration {
    match status {
        Status::Active | Status::Contending | Status::Yielding => timing.liveness_active,
        Status::Registering | Status::Standby | Status::Unknown => timing.liveness_standby,
        Status::Stopped => Duration::ZERO,
    }
}

/// Whether the peer's seq changed recently enough, by our own clock.
pub fn is_live(peer: &PeerView, now: Moment, timing: &Timing) -> bool {
    now.since(peer.changed_at) < liveness_timeout(peer.record.status, timing)
}

/// The moment at which a peer's liveness will lapse unless it changes again.
pub fn lapses_at(peer: &PeerView, timing: &Timing) -> Moment {
    peer.changed_at
        .plus(liveness_timeout(peer.record.status, timing))
}

/// The change moment to presume for a record first seen at `first_seen`: a record whose
/// writer's wall clock says it is older than its liveness timeout PLUS the skew allowance
/// is presumed long dead; any other record is presumed to have just changed, so a device
/// that just started never preempts a leader it has not had time to observe. Skew below
/// the allowance changes no decision.
pub fn presumed_change(
    record: &DeviceRecord,
    first_seen: Moment,
    wall_now_ms: u64,
    timing: &Timing,
) -> Moment {
    let timeout = liveness_timeout(record.status, timing);
    let age_ms = wall_now_ms.saturating_sub(record.written_at_ms);
    let limit_ms = (timeout + timing.skew_allowance).as_millis() as u64;
    if record.written_at_ms != 0 && age_ms > limit_ms {
        first_seen.minus(timeout)
    } else {
        first_seen
    }
}

fn live<'a>(
    peers: &'a Peers,
    now: Moment,
    timing: &Timing,
) -> impl Iterator<Item = &'a PeerView> + 'a {
    let timing = *timing;
    peers
        .values()
        .filter(move |peer| is_live(peer, now, &timing))
}

/// The leader: the live record with the highest claim key among those Active.
pub fn leader<'a>(peers: &'a Peers, now: Moment, timing: &Timing) -> Option<&'a PeerView> {
    live(peers, now, timing)
        .filter(|peer| peer.record.status == Status::Active)
        .max_by(|a, b| claim_key(&a.record).cmp(&claim_key(&b.record)))
}

pub fn claim_key(record: &DeviceRecord) -> ClaimKey<'_> {
    (record.term, record.device_id.as_str())
}

/// The highest live claim (Contending or Active) among the peers.
pub fn highest_claim<'a>(peers: &'a Peers, now: Moment, timing: &Timing) -> Option<&'a PeerView> {
    live(peers, now, timing)
        .filter(|peer| peer.record.status.claims())
        .max_by(|a, b| claim_key(&a.record).cmp(&claim_key(&b.record)))
}

/// Whether some live peer claims above `mine`.
pub fn outranked(peers: &Peers, mine: ClaimKey<'_>, now: Moment, timing: &Timing) -> bool {
    highest_claim(peers, now, timing).is_some_and(|peer| claim_key(&peer.record) > mine)
}

/// The highest sane term any record ever named (claims and handoffs, live or not): a new
/// claim must exceed it. Terms above [`TERM_MAX`] are corrupt (reported when read) and
/// left out, so they never spread into ours nor make it wrap.
pub fn highest_term(peers: &Peers) -> u64 {
    peers
        .values()
        .flat_map(|peer| {
            let handoff = peer.record.handoff.as_ref().map_or(0, |h| h.term);
            [peer.record.term, handoff]
        })
        .filter(|term| *term <= TERM_MAX)
        .max()
        .unwrap_or(0)
}

/// A live handoff addressed to `me` that no live claim has overtaken.
pub fn handoff_for<'a>(
    peers: &'a Peers,
    me: &str,
    now: Moment,
    timing: &Timing,
) -> Option<&'a Handoff> {
    let handoff = live(peers, now, timing)
        .filter(|peer| peer.record.status == Status::Yielding)
        .filter_map(|peer| peer.record.handoff.as_ref())
        .filter(|handoff| handoff.target == me)
        .max_by_key(|handoff| handoff.term)?;
    let overtaken =
        highest_claim(peers, now, timing).is_some_and(|peer| peer.record.term >= handoff.term);
    (!overtaken).then_some(handoff)
}

/// A live yielding peer: leadership is in transit, nobody else should contend.
pub fn handoff_in_transit<'a>(
    peers: &'a Peers,
    now: Moment,
    timing: &Timing,
) -> Option<&'a PeerView> {
    live(peers, now, timing)
        .find(|peer| peer.record.status == Status::Yielding && peer.record.handoff.is_some())
}

/// The best live standby to hand over to: highest priority, then most recently seen,
/// then device id. A standby whose bot token Telegram refused is none.
pub fn best_standby<'a>(peers: &'a Peers, now: Moment, timing: &Timing) -> Option<&'a PeerView> {
    best_standby_where(peers, now, timing, |_| true)
}

/// [`best_standby`] among the standbys that also pass `also` (a cut-off leader's rule:
/// those that said they reached Telegram, `witness::reached_since_cut_off`).
pub fn best_standby_where<'a>(
    peers: &'a Peers,
    now: Moment,
    timing: &Timing,
    also: impl Fn(&PeerView) -> bool,
) -> Option<&'a PeerView> {
    live(peers, now, timing)
        .filter(|peer| {
            peer.record.status == Status::Standby
                && !peer.record.is_newer_schema()
                && peer.record.polling_refused.is_none()
        })
        .filter(|peer| also(peer))
        .max_by(|a, b| {
            (a.record.priority, a.changed_at, &a.record.device_id).cmp(&(
                b.record.priority,
                b.changed_at,
                &b.record.device_id,
            ))
        })
}

/// Activation requests published by live peers, in stem order.
pub fn activation_requests<'a>(
    peers: &'a Peers,
    now: Moment,
    timing: &Timing,
) -> impl Iterator<Item = (&'a PeerView, &'a ActivationRequest)> + 'a {
    live(peers, now, timing)
        .filter_map(|peer| peer.record.activation_request.as_ref().map(|r| (peer, r)))
}

/// Whether `device_id` names a live standby (a valid handoff target).
pub fn find_by_id<'a>(peers: &'a Peers, device_id: &str) -> Option<&'a PeerView> {
    peers
        .values()
        .find(|peer| peer.record.device_id == device_id)
}

/// Health of a row in the device table.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Seen to change within its liveness timeout.
    Ok,
    /// Not seen to change within its liveness timeout.
    Stale,
    /// Stopped cleanly.
    Stopped,
    /// Written by a newer baton: shown, never judged.
    Unknown,
}

/// One row of `baton status` and Telegram's `/devices`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DeviceRow {
    pub number: usize,
    pub device_id: String,
    pub hostname: String,
    pub role: Status,
    pub term: u64,
    pub thread_id: Option<i64>,
    pub priority: i32,
    /// Seconds since the record was last seen to change, by the observer's clock.
    pub heartbeat_age_s: u64,
    /// The writer's wall clock at its last write, ms since the epoch (informational).
    pub written_at_ms: u64,
    pub health: Health,
    pub this_device: bool,
    /// Why this device cannot serve the bot, when it says so (Telegram refused its token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The device table: active first, then by device id; numbered from 1.
///
/// `entries` are (record, time since it was seen to change, is this device).
pub fn device_table(
    entries: Vec<(DeviceRecord, Duration, bool)>,
    timing: &Timing,
) -> Vec<DeviceRow> {
    let mut rows: Vec<DeviceRow> = entries
        .into_iter()
        .map(|(record, age, this_device)| {
            let health = if record.is_newer_schema() {
                Health::Unknown
            } else if record.status == Status::Stopped {
                Health::Stopped
            } else if age < liveness_timeout(record.status, timing) {
                Health::Ok
            } else {
                Health::Stale
            };
            DeviceRow {
                number: 0,
                device_id: record.device_id,
                hostname: record.hostname,
                role: record.status,
                term: record.term,
                thread_id: record.thread_id,
                priority: record.priority,
                heartbeat_age_s: age.as_secs(),
                written_at_ms: record.written_at_ms,
                health,
                this_device,
                problem: record
                    .polling_refused
                    .map(|reason| format!("Telegram refused its bot token ({reason})")),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        let rank = |row: &DeviceRow| !(row.role == Status::Active && row.health == Health::Ok);
        (rank(a), &a.device_id).cmp(&(rank(b), &b.device_id))
    });
    for (index, row) in rows.iter_mut().enumerate() {
        row.number = index + 1;
    }
    rows
}

/// Resolves what a user typed (`2`, a device id, or a unique part of one) to a device id.
pub fn resolve_target(rows: &[DeviceRow], typed: &str) -> Result<String, TargetError> {
    let typed = typed.trim();
    if let Ok(number) = typed.parse::<usize>() {
        return rows
            .iter()
            .find(|row| row.number == number)
            .map(|row| row.device_id.clone())
            .ok_or(TargetError::NoSuchNumber {
                number,
                count: rows.len(),
            });
    }
    if let Some(row) = rows.iter().find(|row| row.device_id == typed) {
        return Ok(row.device_id.clone());
    }
    let matches: Vec<&DeviceRow> = rows
        .iter()
        .filter(|row| row.device_id.contains(typed))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.device_id.clone()),
        [] => Err(TargetError::Unknown {
            typed: typed.to_string(),
        }),
        many => Err(TargetError::Ambiguous {
            typed: typed.to_string(),
            candidates: many.iter().map(|row| row.device_id.clone()).collect(),
        }),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "there is no device number {number}; the table has {count} (see `baton status` or /devices)"
    )]
    NoSuchNumber { number: usize, count: usize },
    #[error("no device matches {typed:?} (see `baton status` or /devices)")]
    Unknown { typed: String },
    #[error("{typed:?} matches several devices: {}; type more of the id or its number", candidates.join(", "))]
    Ambiguous {
        typed: String,
        candidates: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Identity, file_stem};

    fn timing() -> Timing {
        Timing::default()
    }

    fn peer(id: &str, status: Status, term: u64, changed_at: u64) -> PeerView {
        let identity = Identity {
            device_id: id.into(),
            hostname: "h".into(),
            project_dir: "/p".into(),
            pid: 1,
            instance: "i".into(),
            install_id: "x".into(),
            boot_id: String::new(),
            priority: 0,
            thread_id: None,
            version: String::new(),
        };
        let mut record = DeviceRecord::new(&identity);
        record.status = status;
        record.term = term;
        record.seq = 1;
        PeerView {
            stem: file_stem(id),
            record,
            changed_at: Moment(changed_at),
            present: true,
        }
    }

    fn peers(list: Vec<PeerView>) -> Peers {
        list.into_iter().map(|p| (p.stem.clone(), p)).collect()
    }

    #[test]
    fn liveness_uses_the_local_change_moment_only() {
        let t = timing();
        let mut p = peer("a", Status::Active, 1, 1_000);
        p.record.written_at_ms = 1; // 1970: a wildly skewed wall clock changes nothing
        let live_until = 1_000 + t.liveness_active.as_millis() as u64;
        assert!(is_live(&p, Moment(live_until - 1), &t));
        assert!(!is_live(&p, Moment(live_until), &t));
        let stopped = peer("b", Status::Stopped, 1, 1_000);
        assert!(!is_live(&stopped, Moment(1_000), &t));
    }

    #[test]
    fn leader_is_the_highest_live_active_claim() {
        let t = timing();
        let set = peers(vec![
            peer("a", Status::Active, 3, 0),
            peer("b", Status::Active, 3, 0),
            peer("c", Status::Active, 2, 0),
            peer("d", Status::Contending, 9, 0),
            peer("e", Status::Active, 8, 0),
        ]);
        let now = Moment(t.liveness_active.as_millis() as u64 - 1);
        assert_eq!(leader(&set, now, &t).unwrap().record.device_id, "e");
        assert_eq!(highest_claim(&set, now, &t).unwrap().record.device_id, "d");
        let mut set = set;
        set.get_mut(&file_stem("e")).unwrap().changed_at = Moment(0);
        let later = Moment(t.liveness_active.as_millis() as u64);
        assert!(leader(&set, later, &t).is_none(), "all have lapsed");
        assert_eq!(highest_term(&set), 9);
    }

    #[test]
    fn ties_on_a_term_break_by_device_id() {
        let t = timing();
        let set = peers(vec![
            peer("a", Status::Active, 5, 0),
            peer("b", Status::Active, 5, 0),
        ]);
        assert_eq!(leader(&set, Moment(0), &t).unwrap().record.device_id, "b");
        assert!(outranked(&set, (5, "a"), Moment(0), &t));
        assert!(!outranked(&set, (5, "c"), Moment(0), &t));
    }

    #[test]
    fn startup_presumes_recent_records_alive_whatever_the_skew() {
        let t = timing();
        let hour_ms = 3_600_000;
        let now_wall = 10 * hour_ms;
        let mut record = peer("a", Status::Active, 1, 0).record;
        for skew in [-(hour_ms as i64), 0, hour_ms as i64] {
            record.written_at_ms = (now_wall as i64 + skew) as u64;
            assert_eq!(
                presumed_change(&record, Moment(500_000), now_wall, &t),
                Moment(500_000)
            );
        }
        record.written_at_ms = now_wall - 5 * hour_ms;
        let presumed = presumed_change(&record, Moment(500_000), now_wall, &t);
        assert!(!is_live(
            &PeerView {
                stem: "s".into(),
                record,
                changed_at: presumed,
                present: true
            },
            Moment(500_000),
            &t
        ));
    }

    #[test]
    fn handoff_goes_to_its_target_unless_overtaken() {
        let t = timing();
        let mut yielding = peer("a", Status::Yielding, 4, 0);
        yielding.record.handoff = Some(Handoff {
            target: "b".into(),
            term: 5,
        });
        let set = peers(vec![yielding.clone(), peer("b", Status::Standby, 0, 0)]);
        assert_eq!(handoff_for(&set, "b", Moment(1), &t).unwrap().term, 5);
        assert!(handoff_for(&set, "c", Moment(1), &t).is_none());
        assert!(handoff_in_transit(&set, Moment(1), &t).is_some());
        let set = peers(vec![yielding, peer("c", Status::Active, 6, 0)]);
        assert!(handoff_for(&set, "b", Moment(1), &t).is_none());
    }

    #[test]
    fn best_standby_prefers_priority_then_recency() {
        let t = timing();
        let mut high = peer("a", Status::Standby, 0, 0);
        high.record.priority = 5;
        let recent = peer("b", Status::Standby, 0, 100);
        let set = peers(vec![high.clone(), recent.clone()]);
        assert_eq!(
            best_standby(&set, Moment(200), &t)
                .unwrap()
                .record
                .device_id,
            "a"
        );
        let set = peers(vec![peer("a", Status::Standby, 0, 0), recent]);
        assert_eq!(
            best_standby(&set, Moment(200), &t)
                .unwrap()
                .record
                .device_id,
            "b"
        );
    }

    #[test]
    fn table_puts_the_active_first_and_resolves_numbers_and_names() {
        let t = timing();
        let entries = vec![
            (
                peer("mac:/a", Status::Standby, 1, 0).record,
                Duration::from_secs(3),
                false,
            ),
            (
                peer("mac:/z", Status::Active, 2, 0).record,
                Duration::from_secs(1),
                true,
            ),
            (
                peer("mac:/b", Status::Standby, 1, 0).record,
                Duration::from_secs(4000),
                false,
            ),
        ];
        let rows = device_table(entries, &t);
        let ids: Vec<&str> = rows.iter().map(|r| r.device_id.as_str()).collect();
        assert_eq!(ids, ["mac:/z", "mac:/a", "mac:/b"]);
        assert_eq!(rows[2].health, Health::Stale);
        assert_eq!(resolve_target(&rows, "2").unwrap(), "mac:/a");
        assert_eq!(resolve_target(&rows, "/b").unwrap(), "mac:/b");
        assert!(matches!(
            resolve_target(&rows, "9"),
            Err(TargetError::NoSuchNumber { .. })
        ));
        assert!(matches!(
            resolve_target(&rows, "mac"),
            Err(TargetError::Ambiguous { .. })
        ));
        assert!(matches!(
            resolve_target(&rows, "pc"),
            Err(TargetError::Unknown { .. })
        ));
    }
}
