//! The mailbox: updates the active device routes to other devices through the synced
//! folder, and what their readers acknowledge. Pure rules; the file IO is the adapter's
//! (`src/adapters/mailbox.rs`).
//!
//! Owns: the mailbox format (`<group>/mail/<writer stem>.json`, ONE writer: the device
//! whose stem it is), its bounds ([`MAIL_ENTRIES_MAX`], [`MAIL_BYTES_MAX`]), posting,
//! pruning what its addressees acknowledged (in their own records, `mail_acked`) and
//! unserved mail older than [`UNSERVED_KEEP_MS`], which mail a reader should deliver, the
//! reader's acknowledgement bookkeeping ([`AckTracker`]), the duplicate key that tells
//! one Telegram update delivered twice (across a failover), and dating mail so the
//! mirror does not drop it ([`date_at_least`]). Must never: do IO, panic on a file's
//! content, or let a number from a file wrap.
//!
//! Sequencing: every mail gets `seq`, growing by one per mailbox *epoch* (random, drawn
//! when a writer finds no readable mailbox of its own). A reader acknowledges "every mail
//! of `writer` in `epoch` addressed to me, through `seq`"; seqs of different epochs are
//! never compared, so a lost mailbox file cannot make old acknowledgements delete new mail.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::{DeviceRecord, MailAck};

/// The mailbox format this build writes.
pub const MAIL_SCHEMA: u32 = 1;
/// Mail kept per writer, at most: a full mailbox takes no more (the chat is told).
pub const MAIL_ENTRIES_MAX: usize = 200;
/// A mailbox file larger than this is refused unread; posting never makes one larger.
pub const MAIL_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Mail for a topic nobody serves is kept this long (Telegram keeps updates a day too).
pub const UNSERVED_KEEP_MS: u64 = 24 * 60 * 60 * 1000;
/// Duplicate keys a reader remembers, at most.
pub const SEEN_KEYS_MAX: usize = 4096;

/// One routed update.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Mail {
    pub seq: u64,
    pub update_id: i64,
    pub chat_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<i64>,
    /// The device that owned the topic when the mail was posted; `None`: nobody served it,
    /// whoever owns the topic when it reads this delivers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The writer's wall clock when it posted (for expiry of unserved mail only).
    #[serde(default)]
    pub queued_at_ms: u64,
    pub payload: Value,
}

/// A mailbox file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Mailbox {
    pub schema: u32,
    pub writer: String,
    pub epoch: String,
    /// The seq the next mail gets.
    pub next_seq: u64,
    #[serde(default)]
    pub entries: Vec<Mail>,
    /// Mail of other writers' mailboxes this writer took over ([`Mailbox::adopt`]): their
    /// writer was not live and the addressee no longer owned the topic. Kept while the
    /// original is in its mailbox, so nobody adopts it twice and its writer, back, drops
    /// it. At most [`ADOPTED_MAX`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopted: Vec<Origin>,
    /// Mail moved away from an addressee that had not acknowledged it
    /// ([`Mailbox::readdress`]): if that addressee later acknowledges it anyway, it had
    /// fetched it before it went offline and the topic got it twice (counted by
    /// [`Mailbox::prune`]). At most [`MAIL_ENTRIES_MAX`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<Moved>,
}

/// Adoptions remembered per mailbox, at most.
pub const ADOPTED_MAX: usize = 4 * MAIL_ENTRIES_MAX;

/// Where an adopted mail was first queued: its writer's mailbox, epoch and seq.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    pub writer: String,
    pub epoch: String,
    pub seq: u64,
}

/// A mail re-addressed away from `from` (see [`Mailbox::moved`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    pub from: String,
    /// Its seq when it was addressed to `from`.
    pub seq: u64,
    pub update_id: i64,
    /// Every mail posted to `from` after the move has a seq at least this: an
    /// acknowledgement of `from` below it that covers `seq` can only mean `from`
    /// fetched the moved mail.
    pub ceiling: u64,
}

/// One mail given a new addressee (and a new seq) by [`Mailbox::readdress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readdressed {
    pub update_id: i64,
    pub old_seq: u64,
    pub new_seq: u64,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// What [`Mailbox::prune`] found delivered twice: `from` fetched a mail that had been
/// moved to the topic's new owner (the crash window of an owner change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwiceDelivered {
    pub update_id: i64,
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    #[error("mailbox is {bytes} bytes, over the {MAIL_BYTES_MAX}-byte limit")]
    TooLarge { bytes: usize },
    #[error("mailbox is not valid ({detail}); probably caught mid-sync")]
    Corrupt { detail: String },
    #[error("mailbox names writer {found:?}, not the device its file name belongs to")]
    WrongWriter { found: String },
    #[error("mailbox is full ({MAIL_ENTRIES_MAX} mails or {MAIL_BYTES_MAX} bytes)")]
    Full,
    #[error("mailbox seq would pass its bound")]
    SeqExhausted,
}

impl Mailbox {
    pub fn new(writer: &str, epoch: &str) -> Mailbox {
        Mailbox {
            schema: MAIL_SCHEMA,
            writer: writer.into(),
            epoch: epoch.into(),
            next_seq: 1,
            entries: Vec::new(),
            adopted: Vec::new(),
            moved: Vec::new(),
        }
    }

    /// Reads a mailbox found under `file_name`, which must be its writer's
    /// (`record::file_name` of the writer's device id).
    pub fn parse(text: &str, file_name: &str) -> Result<Mailbox, MailError> {
        if text.len() > MAIL_BYTES_MAX {
            return Err(MailError::TooLarge { bytes: text.len() });
        }
        let mut mailbox: Mailbox =
            serde_json::from_str(text).map_err(|error| MailError::Corrupt {
                detail: error.to_string(),
            })?;
        if crate::record::file_name(&mailbox.writer) != file_name {
            return Err(MailError::WrongWriter {
                found: mailbox.writer,
            });
        }
        // Untrusted: keep the bound, keep seqs below next_seq, in order.
        mailbox.entries.truncate(MAIL_ENTRIES_MAX);
        mailbox.entries.sort_by_key(|mail| mail.seq);
        mailbox.adopted.truncate(ADOPTED_MAX);
        mailbox.moved.truncate(MAIL_ENTRIES_MAX);
        let highest = mailbox.entries.last().map_or(0, |mail| mail.seq);
        mailbox.next_seq = mailbox.next_seq.max(highest.saturating_add(1));
        Ok(mailbox)
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string(self)
            .unwrap_or_else(|error| panic!("BUG: a mailbox failed to serialise: {error}"));
        text.push('\n');
        text
    }

    /// Adds a mail; its seq, or `Full` (nothing added) when a bound would be passed.
    pub fn post(&mut self, mut mail: Mail) -> Result<u64, MailError> {
        if self.entries.len() >= MAIL_ENTRIES_MAX {
            return Err(MailError::Full);
        }
        if self.next_seq >= crate::record::SEQ_MAX {
            return Err(MailError::SeqExhausted);
        }
        mail.seq = self.next_seq;
        self.entries.push(mail);
        if self.to_json().len() > MAIL_BYTES_MAX {
            self.entries.pop();
            return Err(MailError::Full);
        }
        self.next_seq += 1;
        Ok(self.next_seq - 1)
    }

    /// Deletes what was delivered: mail its addressee acknowledged, unserved mail any
    /// reader acknowledged, and unserved mail older than a day by our clock. Returns
    /// the mails deleted as (seq, why).
    pub fn prune<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a DeviceRecord>,
        now_wall_ms: u64,
    ) -> Vec<(u64, &'static str)> {
        // Per reader: its acknowledgement here, and what it serves (chat, topic).
        let mut acked_by: BTreeMap<&str, (u64, Option<i64>, Option<i64>)> = BTreeMap::new();
        for record in records {
            for ack in &record.mail_acked {
                if ack.writer == self.writer && ack.epoch == self.epoch {
                    let serves = (ack.through, record.chat_id, record.thread_id);
                    acked_by.insert(record.device_id.as_str(), serves);
                }
            }
        }
        // Unaddressed mail was delivered when a reader serving its topic (or its whole
        // chat) acknowledged past it; any other reader's acknowledgement says nothing.
        let served_by_acker = |mail: &Mail| {
            acked_by.values().any(|(through, chat, thread)| {
                *through >= mail.seq
                    && chat.is_none_or(|c| c == mail.chat_id)
                    && (thread.is_none() || *thread == mail.thread_id)
            })
        };
        let mut deleted = Vec::new();
        self.entries.retain(|mail| {
            let why = match &mail.to {
                Some(to) if acked_by.get(to.as_str()).is_some_and(|a| a.0 >= mail.seq) => {
                    Some("delivered")
                }
                None if served_by_acker(mail) => Some("delivered"),
                None if now_wall_ms.saturating_sub(mail.queued_at_ms) > UNSERVED_KEEP_MS => {
                    Some("expired: no device served its topic for a day")
                }
                _ => None,
            };
            if let Some(why) = why {
                deleted.push((mail.seq, why));
            }
            why.is_none()
        });
        deleted
    }

    /// Mail addressed to `device` still waiting.
    pub fn queued_for(&self, device: &str) -> usize {
        self.entries
            .iter()
            .filter(|mail| mail.to.as_deref() == Some(device))
            .count()
    }

    /// What `me` should deliver from this mailbox, in seq order: mail addressed to it,
    /// and unaddressed mail for a topic `i_own`, above what it acknowledged.
    pub fn deliverable<'a>(
        &'a self,
        me: &str,
        acks: &[MailAck],
        i_own: impl Fn(i64, Option<i64>) -> bool,
    ) -> Vec<&'a Mail> {
        let through = acks
            .iter()
            .find(|ack| ack.writer == self.writer && ack.epoch == self.epoch)
            .map_or(0, |ack| ack.through);
        self.entries
            .iter()
            .filter(|mail| mail.seq > through)
            .filter(|mail| match &mail.to {
                Some(to) => to == me,
                None => i_own(mail.chat_id, mail.thread_id),
            })
            .collect()
    }
}

/// Per reader: how far it acknowledged the mailbox (`writer`, `epoch`).
fn acked_through<'a>(
    records: impl IntoIterator<Item = &'a DeviceRecord>,
    writer: &str,
    epoch: &str,
) -> BTreeMap<String, u64> {
    let mut through = BTreeMap::new();
    for record in records {
        for ack in &record.mail_acked {
            if ack.writer == writer && ack.epoch == epoch {
                through.insert(record.device_id.clone(), ack.through);
            }
        }
    }
    through
}

impl Mailbox {
    /// Gives mail whose addressee is offline (stale, stopped, gone: `addressee_live` is
    /// false) and no longer owns its topic to the topic's current owner, so it does not
    /// wait for a device that will not serve it. Mail of a live addressee stays with it
    /// even when the topic's owner changed (an `/activate`, a device of higher rank back):
    /// it is being delivered, and moving it would race the addressee's acknowledgement
    /// and deliver it twice; only new mail goes to the new owner. `owner(chat, topic)` says
    /// who owns a topic now: `None` leaves that topic's mail as it is, `Some(None)` means
    /// nobody serves it (the mail becomes unaddressed: whoever serves it later delivers
    /// it). Mail its addressee acknowledged is left for [`Mailbox::prune`]; unaddressed
    /// mail is left too (its topic's owner delivers it wherever it is).
    ///
    /// A moved mail gets a new seq (its new addressee may have acknowledged past the old
    /// one), and so does every later mail of its topic, so that a topic's mail stays in
    /// seq order; a reader that already had one of those skips it as a duplicate.
    pub fn readdress<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a DeviceRecord>,
        owner: impl Fn(i64, Option<i64>) -> Option<Option<String>>,
        addressee_live: impl Fn(&str) -> bool,
    ) -> Vec<Readdressed> {
        let acked = acked_through(records, &self.writer, &self.epoch);
        let mut moving_topics: BTreeSet<(i64, Option<i64>)> = BTreeSet::new();
        let mut moved = Vec::new();
        let mut kept = Vec::with_capacity(self.entries.len());
        for mut mail in std::mem::take(&mut self.entries) {
            let topic = (mail.chat_id, mail.thread_id);
            let now_owner = owner(mail.chat_id, mail.thread_id);
            // Acknowledged mail is delivered: prune deletes it, nothing moves it.
            let waiting = mail.to.as_ref().is_some_and(|to| {
                !addressee_live(to) && acked.get(to).is_none_or(|through| *through < mail.seq)
            });
            let stale = waiting
                && matches!((&mail.to, &now_owner), (Some(to), Some(new)) if new.as_deref() != Some(to.as_str()));
            if stale || (waiting && moving_topics.contains(&topic)) {
                moving_topics.insert(topic);
                let from = mail.to.clone();
                if stale && let Some(new) = now_owner {
                    mail.to = new;
                }
                moved.push((from, mail));
            } else {
                kept.push(mail);
            }
        }
        self.entries = kept;
        let mut done = Vec::with_capacity(moved.len());
        for (from, mut mail) in moved {
            let old_seq = mail.seq;
            // Taken out above, so the bound holds; only the seq's own bound can refuse.
            if self.next_seq >= crate::record::SEQ_MAX {
                self.entries.push(mail);
                continue;
            }
            mail.seq = self.next_seq;
            self.next_seq += 1;
            if from != mail.to
                && let Some(from) = &from
            {
                if self.moved.len() >= MAIL_ENTRIES_MAX {
                    self.moved.remove(0);
                }
                self.moved.push(Moved {
                    from: from.clone(),
                    seq: old_seq,
                    update_id: mail.update_id,
                    ceiling: 0,
                });
            }
            done.push(Readdressed {
                update_id: mail.update_id,
                old_seq,
                new_seq: mail.seq,
                from,
                to: mail.to.clone(),
            });
            self.entries.push(mail);
        }
        self.entries.sort_by_key(|mail| mail.seq);
        // Anything posted from now on has a seq at least this.
        for moved in self.moved.iter_mut().filter(|m| m.ceiling == 0) {
            moved.ceiling = self.next_seq;
        }
        done
    }

    /// Mail moved away from an addressee that, as its acknowledgement now shows, had
    /// fetched it anyway: the topic got it twice. Each is reported once; moves that can
    /// no longer be told (the addressee acknowledged past the ceiling) are forgotten.
    pub fn twice_delivered<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a DeviceRecord>,
    ) -> Vec<TwiceDelivered> {
        let acked = acked_through(records, &self.writer, &self.epoch);
        let mut twice = Vec::new();
        self.moved.retain(|moved| {
            let Some(through) = acked.get(&moved.from) else {
                return true;
            };
            if *through >= moved.seq && *through < moved.ceiling {
                twice.push(TwiceDelivered {
                    update_id: moved.update_id,
                    from: moved.from.clone(),
                });
                return false;
            }
            *through < moved.ceiling
        });
        twice
    }

    /// Mail of `orphan` (another writer's mailbox, its writer not live) that this
    /// writer should take over: addressed to a device that is offline and no longer
    /// owns its topic
    /// (`owner` as for [`Mailbox::readdress`]), not acknowledged by it, and not adopted
    /// by anybody yet (`adopted_anywhere`). Each comes with its new addressee.
    pub fn orphans<'m, 'a>(
        orphan: &'m Mailbox,
        records: impl IntoIterator<Item = &'a DeviceRecord>,
        owner: impl Fn(i64, Option<i64>) -> Option<Option<String>>,
        addressee_live: impl Fn(&str) -> bool,
        adopted_anywhere: &BTreeSet<Origin>,
    ) -> Vec<(&'m Mail, Option<String>)> {
        let acked = acked_through(records, &orphan.writer, &orphan.epoch);
        orphan
            .entries
            .iter()
            .filter_map(|mail| {
                let to = mail.to.as_ref()?;
                let now_owner = owner(mail.chat_id, mail.thread_id)?;
                let moved = !addressee_live(to)
                    && now_owner.as_deref() != Some(to.as_str())
                    && acked.get(to).is_none_or(|through| *through < mail.seq)
                    && !adopted_anywhere.contains(&orphan.origin_of(mail));
                moved.then_some((mail, now_owner))
            })
            .collect()
    }

    /// Where `mail` of this mailbox came from, as an adopter records it.
    pub fn origin_of(&self, mail: &Mail) -> Origin {
        Origin {
            writer: self.writer.clone(),
            epoch: self.epoch.clone(),
            seq: mail.seq,
        }
    }

    /// Takes over another writer's mail (see [`Mailbox::orphans`]), addressed to `to`;
    /// its seq here, or an error (nothing changed).
    pub fn adopt(
        &mut self,
        origin: Origin,
        mut mail: Mail,
        to: Option<String>,
    ) -> Result<u64, MailError> {
        mail.to = to;
        let seq = self.post(mail)?;
        if self.adopted.len() >= ADOPTED_MAX {
            self.adopted.remove(0);
        }
        self.adopted.push(origin);
        Ok(seq)
    }

    /// Adoptions whose original addressee acknowledged the original after all (it came
    /// back before the adoption reached it, or had fetched it before it went offline):
    /// the topic got that update twice. Each is reported once and forgotten (its
    /// acknowledgement already keeps anybody from adopting or serving it again).
    pub fn adopted_also_delivered<'a>(
        &mut self,
        others: &[Mailbox],
        records: impl IntoIterator<Item = &'a DeviceRecord> + Clone,
    ) -> Vec<TwiceDelivered> {
        let mut twice = Vec::new();
        self.adopted.retain(|origin| {
            let original = others
                .iter()
                .filter(|m| m.writer == origin.writer && m.epoch == origin.epoch)
                .flat_map(|m| m.entries.iter())
                .find(|mail| mail.seq == origin.seq);
            let Some(Mail {
                to: Some(to),
                update_id,
                ..
            }) = original
            else {
                return true;
            };
            let acked = acked_through(records.clone(), &origin.writer, &origin.epoch);
            if acked.get(to).is_some_and(|through| *through >= origin.seq) {
                twice.push(TwiceDelivered {
                    update_id: *update_id,
                    from: to.clone(),
                });
                return false;
            }
            true
        });
        twice
    }

    /// Forgets adoptions whose original is gone from its writer's mailbox (`present`
    /// says whether it is still there), so the list stays bounded by what matters.
    pub fn forget_adopted(&mut self, present: impl Fn(&Origin) -> bool) {
        self.adopted.retain(|origin| present(origin));
    }

    /// Deletes our own mail another writer adopted while we were away (`adopted_elsewhere`
    /// holds every adoption in the folder); returns the seqs deleted.
    pub fn drop_adopted(&mut self, adopted_elsewhere: &BTreeSet<Origin>) -> Vec<u64> {
        let mut dropped = Vec::new();
        let (writer, epoch) = (self.writer.clone(), self.epoch.clone());
        self.entries.retain(|mail| {
            let origin = Origin {
                writer: writer.clone(),
                epoch: epoch.clone(),
                seq: mail.seq,
            };
            let gone = adopted_elsewhere.contains(&origin);
            if gone {
                dropped.push(mail.seq);
            }
            !gone
        });
        dropped
    }
}

/// One Telegram update, whoever routed it: the chat, the update id and the message (or
/// callback) id. Update ids alone repeat after Telegram starts them over; message ids in
/// a chat do not.
pub fn duplicate_key(payload: &Value) -> (i64, i64, String) {
    let update_id = payload
        .get("update_id")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let message = ["message", "edited_message", "channel_post"]
        .iter()
        .find_map(|kind| payload.get(kind));
    let (chat, item) = match (message, payload.get("callback_query")) {
        (Some(message), _) => (
            message.pointer("/chat/id").and_then(Value::as_i64),
            message
                .get("message_id")
                .and_then(Value::as_i64)
                .map(|id| id.to_string()),
        ),
        (None, Some(callback)) => (
            callback.pointer("/message/chat/id").and_then(Value::as_i64),
            callback
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        (None, None) => (None, None),
    };
    (chat.unwrap_or(0), update_id, item.unwrap_or_default())
}

/// Moves a message's `date` (a callback's: its message's) up to `startup_s` when it is
/// earlier: the mirror drops what is dated before its start, and mail that waited for
/// its device must still be delivered. The original date is kept in `baton_queued_date`.
pub fn date_at_least(payload: &mut Value, startup_s: i64) {
    let pointer = if payload.get("callback_query").is_some() {
        "/callback_query/message"
    } else if payload.get("message").is_some() {
        "/message"
    } else if payload.get("edited_message").is_some() {
        "/edited_message"
    } else {
        return;
    };
    let Some(message) = payload.pointer_mut(pointer).and_then(Value::as_object_mut) else {
        return;
    };
    let date = message.get("date").and_then(Value::as_i64).unwrap_or(0);
    if date < startup_s {
        message.insert("baton_queued_date".into(), Value::from(date));
        message.insert("date".into(), Value::from(startup_s));
    }
}

/// A reader's bookkeeping: which mail it handed to its child, which the child fetched,
/// and the acknowledgements that follow; plus the duplicate keys it delivered.
#[derive(Debug, Default, Clone)]
pub struct AckTracker {
    /// Per (writer, epoch): the acknowledged prefix, and mail offered above it
    /// (seq → fetched?).
    boxes: BTreeMap<(String, String), (u64, BTreeMap<u64, bool>)>,
    seen: VecDeque<(i64, i64, String)>,
    seen_set: BTreeSet<(i64, i64, String)>,
}

/// What a reader should do with one mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// New: hand it to the child, then call [`AckTracker::fetched`].
    Deliver,
    /// The same update came through another mailbox already: counted as fetched.
    Duplicate,
    /// Already offered (or acknowledged): nothing to do.
    Known,
}

impl AckTracker {
    /// Starts from the acknowledgements in our own record (a restart).
    pub fn from_acks(acks: &[MailAck]) -> AckTracker {
        let mut tracker = AckTracker::default();
        for ack in acks {
            tracker.boxes.insert(
                (ack.writer.clone(), ack.epoch.clone()),
                (ack.through, BTreeMap::new()),
            );
        }
        tracker
    }

    /// A mail found in `writer`'s mailbox for us.
    pub fn offer(&mut self, writer: &str, epoch: &str, mail: &Mail) -> Offer {
        let entry = self
            .boxes
            .entry((writer.into(), epoch.into()))
            .or_insert((0, BTreeMap::new()));
        if mail.seq <= entry.0 || entry.1.contains_key(&mail.seq) {
            return Offer::Known;
        }
        let key = duplicate_key(&mail.payload);
        let duplicate = self.seen_set.contains(&key);
        entry.1.insert(mail.seq, duplicate);
        if duplicate {
            return Offer::Duplicate;
        }
        self.remember(key);
        Offer::Deliver
    }

    /// A key delivered some other way (this device's own gateway): mail of it is a
    /// duplicate.
    pub fn remember(&mut self, key: (i64, i64, String)) {
        if self.seen_set.insert(key.clone()) {
            self.seen.push_back(key);
            if self.seen.len() > SEEN_KEYS_MAX
                && let Some(old) = self.seen.pop_front()
            {
                self.seen_set.remove(&old);
            }
        }
    }

    /// The child fetched this mail.
    pub fn fetched(&mut self, writer: &str, epoch: &str, seq: u64) {
        if let Some((_, offered)) = self.boxes.get_mut(&(writer.into(), epoch.into()))
            && let Some(done) = offered.get_mut(&seq)
        {
            *done = true;
        }
    }

    /// Mail offered but not fetched yet, per writer.
    pub fn outstanding(&self) -> usize {
        self.boxes
            .values()
            .map(|(_, offered)| offered.values().filter(|done| !**done).count())
            .sum()
    }

    /// The acknowledgements to record: per mailbox, the highest seq below which every
    /// mail offered was fetched. Mailboxes whose writer is gone from `writers_alive`
    /// (their file deleted) are forgotten, at most [`crate::record::MAIL_ACKED_MAX`].
    pub fn acks(&mut self) -> Vec<MailAck> {
        for (through, offered) in self.boxes.values_mut() {
            while let Some(entry) = offered.first_entry() {
                if !*entry.get() {
                    break;
                }
                *through = (*through).max(*entry.key());
                entry.remove();
            }
        }
        self.boxes
            .iter()
            .filter(|(_, (through, _))| *through > 0)
            .map(|((writer, epoch), (through, _))| MailAck {
                writer: writer.clone(),
                epoch: epoch.clone(),
                through: *through,
            })
            .take(crate::record::MAIL_ACKED_MAX)
            .collect()
    }

    /// Forgets mailboxes (writer, epoch) no longer in the folder, so acks stay bounded.
    pub fn retain_boxes(&mut self, present: &BTreeSet<(String, String)>) {
        self.boxes.retain(|key, _| present.contains(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mail(update_id: i64, thread: Option<i64>, to: Option<&str>) -> Mail {
        Mail {
            seq: 0,
            update_id,
            chat_id: -1,
            thread_id: thread,
            to: to.map(str::to_owned),
            queued_at_ms: 1_000,
            payload: json!({"update_id": update_id, "message": {"message_id": update_id * 10, "chat": {"id": -1}, "date": 5}}),
        }
    }

    fn reader(id: &str, acks: Vec<MailAck>) -> DeviceRecord {
        let mut record = DeviceRecord::new(&crate::record::Identity {
            device_id: id.into(),
            hostname: String::new(),
            project_dir: String::new(),
            pid: 0,
            instance: String::new(),
            install_id: String::new(),
            boot_id: String::new(),
            priority: 0,
            thread_id: None,
            version: String::new(),
        });
        record.mail_acked = acks;
        record
    }

    #[test]
    fn a_mailbox_round_trips_bounded_and_refuses_another_writer() {
        let mut mailbox = Mailbox::new("w", "e1");
        for id in 1..=MAIL_ENTRIES_MAX as i64 {
            assert_eq!(mailbox.post(mail(id, Some(5), Some("r"))), Ok(id as u64));
        }
        assert_eq!(
            mailbox.post(mail(999, Some(5), Some("r"))),
            Err(MailError::Full)
        );
        let text = mailbox.to_json();
        let name = crate::record::file_name("w");
        assert_eq!(Mailbox::parse(&text, &name).unwrap(), mailbox);
        assert!(matches!(
            Mailbox::parse(&text, &crate::record::file_name("x")),
            Err(MailError::WrongWriter { .. })
        ));
        assert!(matches!(
            Mailbox::parse(&text[..text.len() / 2], &name),
            Err(MailError::Corrupt { .. })
        ));
        // A hand-edited next_seq below its mail is lifted, so seqs never repeat.
        let mut edited = mailbox.clone();
        edited.next_seq = 3;
        let read = Mailbox::parse(&edited.to_json(), &name).unwrap();
        assert_eq!(read.next_seq, MAIL_ENTRIES_MAX as u64 + 1);
    }

    #[test]
    fn pruning_deletes_only_what_the_addressee_acknowledged_in_this_epoch() {
        let mut mailbox = Mailbox::new("w", "e1");
        mailbox.post(mail(1, Some(5), Some("a"))).unwrap();
        mailbox.post(mail(2, Some(6), Some("b"))).unwrap();
        mailbox.post(mail(3, Some(5), Some("a"))).unwrap();
        mailbox.post(mail(4, Some(7), None)).unwrap();
        let ack = |epoch: &str, through| MailAck {
            writer: "w".into(),
            epoch: epoch.into(),
            through,
        };
        // b acknowledged through 4 — but only its own mail counts (not the unserved
        // topic 7's, which b does not serve); an old epoch nothing.
        let mut b = reader("b", vec![ack("e1", 4)]);
        b.thread_id = Some(6);
        let records = [b, reader("a", vec![ack("e0", 9)])];
        let deleted = mailbox.prune(&records, 2_000);
        assert_eq!(deleted, vec![(2, "delivered")]);
        // A reader serving topic 7 that acknowledged it: delivered.
        let mut c = reader("c", vec![ack("e1", 4)]);
        c.thread_id = Some(7);
        let mut kept = mailbox.clone();
        assert_eq!(kept.prune(&[c], 2_000), vec![(4, "delivered")]);
        assert_eq!(mailbox.queued_for("a"), 2);
        // Unserved mail expires after a day.
        let deleted = mailbox.prune(&records, 1_000 + UNSERVED_KEEP_MS + 1);
        assert_eq!(deleted.len(), 1);
        assert_eq!(mailbox.entries.len(), 2);
    }

    #[test]
    fn a_reader_delivers_its_mail_once_and_acknowledges_a_fetched_prefix() {
        let mut mailbox = Mailbox::new("w", "e1");
        mailbox.post(mail(1, Some(5), Some("a"))).unwrap();
        mailbox.post(mail(2, Some(6), Some("b"))).unwrap();
        mailbox.post(mail(3, Some(5), None)).unwrap();
        mailbox.post(mail(4, Some(5), Some("a"))).unwrap();
        let mine = mailbox.deliverable("a", &[], |_, thread| thread == Some(5));
        assert_eq!(mine.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 3, 4]);
        let mut tracker = AckTracker::default();
        for mail in &mine {
            assert_eq!(tracker.offer("w", "e1", mail), Offer::Deliver);
            assert_eq!(tracker.offer("w", "e1", mail), Offer::Known);
        }
        // The same update routed again by the next active device: a duplicate.
        let mut again = mail(4, Some(5), Some("a"));
        again.seq = 1;
        assert_eq!(tracker.offer("w2", "x", &again), Offer::Duplicate);
        tracker.fetched("w", "e1", 1);
        tracker.fetched("w", "e1", 4);
        let acks = tracker.acks();
        assert_eq!(acks.iter().map(|a| a.through).collect::<Vec<_>>(), [1, 1]);
        tracker.fetched("w", "e1", 3);
        let acks = tracker.acks();
        assert_eq!(acks[0].through, 4);
        // After a restart, acknowledged mail is not offered again.
        let left = mailbox.deliverable("a", &acks, |_, _| true);
        assert!(left.is_empty());
    }

    fn ack(writer: &str, epoch: &str, through: u64) -> MailAck {
        MailAck {
            writer: writer.into(),
            epoch: epoch.into(),
            through,
        }
    }

    #[test]
    fn mail_for_a_device_that_no_longer_owns_its_topic_moves_to_the_owner_in_order() {
        let mut mailbox = Mailbox::new("w", "e1");
        mailbox.post(mail(1, Some(5), Some("a"))).unwrap(); // seq 1, acked by a
        mailbox.post(mail(2, Some(5), Some("a"))).unwrap(); // seq 2, waiting for a
        mailbox.post(mail(3, Some(6), Some("c"))).unwrap(); // another topic: stays
        mailbox.post(mail(4, Some(5), Some("b"))).unwrap(); // already b's
        let records = [reader("a", vec![ack("w", "e1", 1)])];
        let owner = |_: i64, thread: Option<i64>| match thread {
            Some(5) => Some(Some("b".to_string())),
            _ => None,
        };
        // a is live: its mail stays with it, whoever owns the topic now.
        assert!(
            mailbox
                .readdress(&records, owner, |to| to == "a")
                .is_empty()
        );
        let moved = mailbox.readdress(&records, owner, |_| false);
        // 2 moves to b, and 4 (b's, later in the topic) follows it, in order.
        let summary: Vec<_> = moved
            .iter()
            .map(|m| (m.update_id, m.old_seq, m.new_seq, m.to.clone()))
            .collect();
        assert_eq!(
            summary,
            [(2, 2, 5, Some("b".into())), (4, 4, 6, Some("b".into()))]
        );
        let order: Vec<_> = mailbox
            .entries
            .iter()
            .map(|m| (m.seq, m.update_id))
            .collect();
        assert_eq!(order, [(1, 1), (3, 3), (5, 2), (6, 4)]);
        assert_eq!(
            mailbox.entries[0].to.as_deref(),
            Some("a"),
            "acked mail stays"
        );
        // b reads both, once; nothing moves again.
        let mine = mailbox.deliverable("b", &[], |_, _| false);
        assert_eq!(mine.iter().map(|m| m.update_id).collect::<Vec<_>>(), [2, 4]);
        assert!(mailbox.readdress(&records, owner, |_| false).is_empty());
        // Nobody serves the topic any more: the mail becomes unaddressed.
        let moved = mailbox.readdress(&records, |_, t| (t == Some(5)).then_some(None), |_| false);
        assert_eq!(moved.len(), 2);
        assert!(
            mailbox
                .entries
                .iter()
                .filter(|m| m.thread_id == Some(5) && m.seq > 1)
                .all(|m| m.to.is_none())
        );
    }

    #[test]
    fn a_moved_mail_its_old_addressee_had_fetched_is_counted_twice_delivered() {
        let mut mailbox = Mailbox::new("w", "e1");
        mailbox.post(mail(1, Some(5), Some("a"))).unwrap();
        mailbox.post(mail(2, Some(5), Some("a"))).unwrap();
        let moved = mailbox.readdress(&[], |_, _| Some(Some("b".into())), |_| false);
        assert_eq!(moved.len(), 2);
        // Later mail for a (it owns the topic again) is above the ceiling.
        mailbox.post(mail(3, Some(5), Some("a"))).unwrap();
        // a comes back: it had fetched seq 1 before it went offline.
        let a = reader("a", vec![ack("w", "e1", 1)]);
        let twice = mailbox.twice_delivered([&a]);
        assert_eq!(
            twice,
            [TwiceDelivered {
                update_id: 1,
                from: "a".into()
            }]
        );
        assert!(mailbox.twice_delivered([&a]).is_empty(), "counted once");
        // An acknowledgement past the ceiling says nothing: forgotten, not counted.
        let a = reader("a", vec![ack("w", "e1", 9)]);
        assert!(mailbox.twice_delivered([&a]).is_empty());
        assert!(mailbox.moved.is_empty());
    }

    #[test]
    fn orphaned_mail_is_adopted_once_and_its_writer_drops_it_when_back() {
        let mut dead = Mailbox::new("dead", "e0");
        dead.post(mail(1, Some(5), Some("a"))).unwrap(); // a acked it
        dead.post(mail(2, Some(5), Some("a"))).unwrap(); // waiting for a, b owns now
        dead.post(mail(3, Some(6), Some("c"))).unwrap(); // c still owns topic 6
        dead.post(mail(4, Some(7), None)).unwrap(); // unaddressed: its owner reads it
        let records = [reader("a", vec![ack("dead", "e0", 1)])];
        let owner = |_: i64, thread: Option<i64>| match thread {
            Some(5) => Some(Some("b".to_string())),
            Some(6) => Some(Some("c".to_string())),
            _ => Some(None),
        };
        let none = BTreeSet::new();
        let orphans = Mailbox::orphans(&dead, &records, owner, |_| false, &none);
        // A live addressee keeps its mail, whoever owns the topic now.
        assert!(Mailbox::orphans(&dead, &records, owner, |to| to == "a", &none).is_empty());
        assert_eq!(orphans.len(), 1);
        assert_eq!((orphans[0].0.seq, orphans[0].1.as_deref()), (2, Some("b")));
        let mut adopter = Mailbox::new("z", "ez");
        let (mail, to) = (orphans[0].0.clone(), orphans[0].1.clone());
        let seq = adopter.adopt(dead.origin_of(&mail), mail, to).unwrap();
        assert_eq!(adopter.deliverable("b", &[], |_, _| false)[0].seq, seq);
        // Adopted once: the next look (by anybody) leaves it.
        let everywhere: BTreeSet<Origin> = adopter.adopted.iter().cloned().collect();
        assert!(Mailbox::orphans(&dead, &records, owner, |_| false, &everywhere).is_empty());
        // a acknowledging the original (it came back before the adoption reached it):
        // counted once, as delivered twice.
        let mut counted = adopter.clone();
        let a_back = [reader("a", vec![ack("dead", "e0", 2)])];
        let twice = counted.adopted_also_delivered(std::slice::from_ref(&dead), &a_back);
        assert_eq!(twice.len(), 1);
        assert!(
            counted
                .adopted_also_delivered(std::slice::from_ref(&dead), &a_back)
                .is_empty()
        );
        // Its writer, back, drops what was adopted, and the adopter forgets it then.
        assert_eq!(dead.drop_adopted(&everywhere), [2]);
        adopter.forget_adopted(|o| dead.entries.iter().any(|m| dead.origin_of(m) == *o));
        assert!(adopter.adopted.is_empty());
    }

    #[test]
    fn dating_lifts_only_older_messages() {
        let mut payload = json!({"update_id": 1, "message": {"date": 5}});
        date_at_least(&mut payload, 10);
        assert_eq!(payload["message"]["date"], 10);
        assert_eq!(payload["message"]["baton_queued_date"], 5);
        let mut payload = json!({"update_id": 1, "callback_query": {"message": {"date": 50}}});
        date_at_least(&mut payload, 10);
        assert_eq!(payload["callback_query"]["message"]["date"], 50);
    }
}
