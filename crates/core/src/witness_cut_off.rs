//! A leader alive but cut off from Telegram hands over: the active device's side of
//! [`crate::witness`]'s cut-off rule, and the standby's word that it reached Telegram.
//!
//! Owns: counting our failed polls ([`Ctx::poll_failed`]: since when they failed with no
//! success between), saying in our record that we are cut off (`telegram_unreachable`),
//! taking it back when a poll succeeds, choosing the standby to hand over to
//! ([`Ctx::cut_off_successor`]), and a standby's `telegram_reached` from the witness's
//! answers ([`Ctx::note_reached`]). Without [`crate::witness::WitnessRules`] (no token)
//! nothing here does anything. Must never: hand over to a standby that has not said,
//! since our cut-off, that Telegram answered it (that is what keeps the role from going
//! back and forth when Telegram is down for everyone), or decide a role (the machine
//! does: it offers the handoff).

use super::context::Ctx;
use super::election;
use super::io::Level;
use super::record::{ReachedWhile, Status};
use super::witness;

impl Ctx {
    /// Active: a poll failed. Returns whether we are cut off (the machine then looks for
    /// a standby to hand over to). The first failure of an episode starts the count; the
    /// failure that finds it older than `cut_off_after` says so in our record.
    pub(crate) fn poll_failed(&mut self) -> bool {
        let Some(rules) = self.witness_rules else {
            return false;
        };
        if !self.acting || self.own.status != Status::Active {
            return false;
        }
        let since = *self.poll_failing_since.get_or_insert(self.now);
        if self.cut_off_seq.is_none() && self.now.since(since) >= rules.cut_off_after {
            self.own.telegram_unreachable = true;
            self.write_record();
            self.cut_off_seq = Some(self.own.seq);
            let message = format!(
                "cannot reach Telegram for {:?} (every getUpdates failed): handing the bot \
                 to a device that can, as soon as one says so",
                self.now.since(since)
            );
            self.notify(Level::Warn, message);
        }
        self.cut_off_seq.is_some()
    }

    /// Active: a poll succeeded after failures. Ends the episode; a record that said we
    /// were cut off is taken back at once.
    pub(crate) fn poll_succeeded(&mut self) {
        self.poll_failing_since = None;
        if self.cut_off_seq.take().is_some() {
            self.own.telegram_unreachable = false;
            if self.own.status == Status::Active {
                self.write_record();
            }
            self.notify(Level::Info, "Telegram answers again: keeping the bot");
        }
    }

    /// Forgets the cut-off (a tenure begins or ends: the count is per tenure).
    pub(crate) fn forget_cut_off(&mut self) {
        self.poll_failing_since = None;
        self.cut_off_seq = None;
        self.own.telegram_unreachable = false;
    }

    /// Active and cut off: the best live standby that has said, since our cut-off
    /// record, that Telegram answered it. `None`: keep the role (nobody can do better).
    pub(crate) fn cut_off_successor(&self) -> Option<String> {
        let cut_off_seq = self.cut_off_seq?;
        let (term, own_seq) = (self.own.term, self.own.seq);
        election::best_standby_where(&self.peers, self.now, &self.timing, |peer| {
            witness::reached_since_cut_off(peer.record.telegram_reached, term, cut_off_seq, own_seq)
        })
        .map(|peer| peer.record.device_id.clone())
    }

    /// Standby: Telegram answered (`reached`) or not while we watched `leader`, which says
    /// it is cut off. Publishes it in our record when it changed.
    pub(crate) fn note_reached(&mut self, leader: ReachedWhile, reached: bool) {
        let word = reached.then_some(leader);
        if self.own.telegram_reached != word {
            self.own.telegram_reached = word;
            self.write_record();
        }
    }
}
