//! How a standby uses Telegram as a second witness: the context's side of
//! [`crate::witness`].
//!
//! Owns: choosing the suspect (a live leader silent past the suspicion threshold, or a
//! leader whose record lapsed within the deferral cap), asking about it (the
//! [`Effect::AskWitness`] effect, rate-bounded and jittered by [`TimerId::WitnessAsk`],
//! one question outstanding), folding in the answer ([`Ctx::witness_answered`]), and
//! the two ways the answer reaches the election: a condemned leader's record is made
//! to lapse now, and a quiet one's lapse is deferred ([`Ctx::witness_deferral`]).
//! Without [`WitnessRules`] (no token: coordination only) every function here does
//! nothing, so the rules are exactly those without a witness. Must never: decide a role
//! (the machine does), or let the witness make a device act: it only ever delays a
//! takeover or makes a record lapse early, and a claim still waits out its settle window.

use super::context::Ctx;
use super::election;
use super::io::{Effect, Level};
use super::record::{ReachedWhile, Status};
use super::timers::{Moment, TimerId};
use super::witness::{self, Episode, Reading, Verdict, WitnessRules};

/// Who the witness is asked about, and in what standing.
struct Suspect {
    episode: Episode,
    device_id: String,
    /// When its record lapses (or lapsed) by the folder alone.
    lapses_at: Moment,
}

impl Ctx {
    fn witness_rules(&self) -> Option<WitnessRules> {
        self.witness_rules
    }

    /// The leader the witness is about at `now`, if any: a live leader silent past the
    /// suspicion threshold, or a lapsed Active record within the deferral cap that
    /// nobody condemned, that is still in the folder and not marked unable to poll.
    fn witness_suspect(&self, rules: &WitnessRules) -> Option<Suspect> {
        let (now, timing) = (self.now, self.timing);
        let suspect = |peer: &election::PeerView| Suspect {
            episode: Episode {
                stem: peer.stem.clone(),
                seq: peer.record.seq,
            },
            device_id: peer.record.device_id.clone(),
            lapses_at: election::lapses_at(peer, &timing),
        };
        if let Some(leader) = election::leader(&self.peers, now, &timing) {
            // A leader that says it is cut off from Telegram is asked about at once: it
            // hands over to a standby that reaches Telegram (`witness_cut_off.rs`).
            let suspicious = now.since(leader.changed_at) >= rules.suspicion_after
                || leader.record.telegram_unreachable;
            return suspicious.then(|| suspect(leader));
        }
        let late = self
            .peers
            .values()
            .filter(|peer| peer.record.status == Status::Active && peer.present)
            .filter(|peer| peer.record.polling_refused.is_none())
            .max_by(|a, b| election::claim_key(&a.record).cmp(&election::claim_key(&b.record)))?;
        let lapses_at = election::lapses_at(late, &timing);
        let within_cap = now < lapses_at.plus(rules.defer_max);
        let episode = Episode {
            stem: late.stem.clone(),
            seq: late.record.seq,
        };
        let condemned = self.witness.condemned.as_ref() == Some(&episode);
        (within_cap && !condemned).then(|| suspect(late))
    }

    /// Standby, watching a live leader: arms the first ask for the moment the leader
    /// becomes suspicious (pushed back by every change of its record).
    pub(crate) fn witness_watch(&mut self) {
        let Some(rules) = self.witness_rules() else {
            return;
        };
        let Some(leader) = election::leader(&self.peers, self.now, &self.timing) else {
            return;
        };
        let episode = Episode {
            stem: leader.stem.clone(),
            seq: leader.record.seq,
        };
        let suspicious_at = if leader.record.telegram_unreachable {
            self.now
        } else {
            leader.changed_at.plus(rules.suspicion_after)
        };
        let new_episode = self.witness.focus(episode);
        if new_episode || !self.timers.is_armed(TimerId::WitnessAsk) {
            let at = suspicious_at.max(self.next_ask_allowed(&rules));
            self.arm_at(TimerId::WitnessAsk, at, 0);
        }
    }

    /// The rate bound: one ask per [`WitnessRules::ask_interval`] base at most.
    fn next_ask_allowed(&self, rules: &WitnessRules) -> Moment {
        self.witness
            .last_asked
            .map_or(Moment(0), |asked| asked.plus(rules.ask_interval.base))
    }

    /// Standby, no live leader: until when the takeover from a lapsed leader waits
    /// because Telegram says nothing waits (`None`: take over by today's rules). Keeps
    /// the asks going while the lapsed leader is within the cap.
    pub(crate) fn witness_deferral(&mut self) -> Option<Moment> {
        let rules = self.witness_rules()?;
        let Some(suspect) = self.witness_suspect(&rules) else {
            self.witness.clear();
            self.cancel(TimerId::WitnessAsk);
            return None;
        };
        self.witness.focus(suspect.episode.clone());
        if !self.timers.is_armed(TimerId::WitnessAsk) {
            let at = self.now.max(self.next_ask_allowed(&rules));
            self.arm_at(TimerId::WitnessAsk, at, 0);
        }
        let verdict = self.witness.verdict(self.now, &rules);
        let until = witness::deferred_until(verdict, suspect.lapses_at, self.now, &rules)?;
        if !self.witness.told {
            self.witness.told = true;
            let message = format!(
                "{}'s record is late, but Telegram shows no update waiting: not taking over \
                 yet (at most {:?} past its lease)",
                suspect.device_id, rules.defer_max
            );
            self.notify(Level::Info, message);
        }
        Some(until)
    }

    /// [`TimerId::WitnessAsk`] fired: asks Telegram about the suspect, if there still is
    /// one, and arms the next ask. An ask left unanswered past the answer timeout counts
    /// as unreachable.
    pub(crate) fn witness_ask(&mut self) {
        let Some(rules) = self.witness_rules() else {
            return;
        };
        if self.witness.awaiting(self.now, &rules) {
            let overdue_at = self
                .witness
                .asked_at
                .map_or(self.now, |asked| asked.plus(rules.answer_timeout));
            self.arm_at(TimerId::WitnessAsk, overdue_at, 0);
            return;
        }
        if self.witness.asked_at.is_some() {
            self.witness.record(self.now, Reading::Unreachable, &rules);
        }
        let Some(suspect) = self.witness_suspect(&rules) else {
            return;
        };
        if self.now < self.next_ask_allowed(&rules) {
            let at = self.next_ask_allowed(&rules);
            self.arm_at(TimerId::WitnessAsk, at, 0);
            return;
        }
        self.witness.focus(suspect.episode);
        self.witness.asked_at = Some(self.now);
        self.witness.last_asked = Some(self.now);
        self.emit(Effect::AskWitness);
        self.arm(TimerId::WitnessAsk, rules.ask_interval);
    }

    /// Folds in Telegram's answer (`None`: unreachable). Returns whether the standby must
    /// look at the world again. A backlog that did not drain makes the suspect's record
    /// lapse now; an answer nobody asked for is ignored.
    pub(crate) fn witness_answered(&mut self, pending_update_count: Option<u64>) -> bool {
        let Some(rules) = self.witness_rules() else {
            return false;
        };
        if self.witness.asked_at.is_none() {
            return false;
        }
        let reading = pending_update_count.map_or(Reading::Unreachable, Reading::Pending);
        let verdict = self.witness.record(self.now, reading, &rules);
        if let Some(since) = self.witness.undrained_since() {
            // The reading that can judge this backlog is due a drain gap after it was
            // seen: ask then if the usual tick comes later. The readings in between
            // stay (one that shows the count shrink restarts the judgement: a live
            // leader confirming while new updates arrive keeps the count level).
            let judging = since
                .plus(rules.drain_gap)
                .max(self.next_ask_allowed(&rules));
            let at = self
                .timers
                .deadline(TimerId::WitnessAsk)
                .map_or(judging, |due| due.min(judging));
            self.arm_at(TimerId::WitnessAsk, at, 0);
        }
        let Some(episode) = self.witness.episode.clone() else {
            return true;
        };
        if let Some(leader) = self.cut_off_leader(&episode) {
            // It hands over itself, to a standby that says it reached Telegram: tell it,
            // and never condemn it (a claim racing its handoff helps nobody).
            self.note_reached(leader, pending_update_count.is_some());
            return true;
        }
        if verdict != Verdict::Backlog {
            return true;
        }
        self.condemn(&episode);
        true
    }

    /// The live leader record of `episode`, if it says it is cut off from Telegram: its
    /// term and seq, as a standby's `telegram_reached` names them.
    fn cut_off_leader(&self, episode: &Episode) -> Option<ReachedWhile> {
        let peer = self.peers.get(&episode.stem)?;
        let cut_off = peer.record.seq == episode.seq
            && peer.record.status == Status::Active
            && peer.record.telegram_unreachable
            && election::is_live(peer, self.now, &self.timing);
        cut_off.then_some(ReachedWhile {
            term: peer.record.term,
            seq: peer.record.seq,
        })
    }

    /// The record of `episode` is not serving (Telegram's backlog did not drain): let it
    /// lapse now and never defer for it.
    fn condemn(&mut self, episode: &Episode) {
        let (now, timing) = (self.now, self.timing);
        if let Some(peer) = self.peers.get_mut(&episode.stem)
            && peer.record.seq == episode.seq
        {
            let timeout = election::liveness_timeout(peer.record.status, &timing);
            let was_live = election::is_live(peer, now, &timing);
            peer.changed_at = peer.changed_at.min(now.minus(timeout));
            let device_id = peer.record.device_id.clone();
            let standing = if was_live {
                "its record still looks live"
            } else {
                "its record is late"
            };
            let message = format!(
                "{device_id} is not serving: updates wait on Telegram and did not drain \
                 ({standing}); taking over without waiting out its lease"
            );
            self.notify(Level::Info, message);
        }
        self.witness.condemned = Some(episode.clone());
        self.witness.clear();
        self.cancel(TimerId::WitnessAsk);
    }
}
