//! Folding observations into peer views, before the machine decides: the last good copy
//! of a corrupt record is kept, a deleted file marks its peer absent without forgetting
//! it, our own conflict copies are deleted, evicted files are asked for, an older copy
//! of our record is re-asserted, and another writer of our file is detected. Must
//! never: decide a role, or panic on a peer's file (it is reported once instead).

use std::collections::BTreeSet;

use super::ctx::{Ctx, HandoffSighting, PriorOwnRecord};
use crate::election::{self, PeerView};
use crate::io::{Effect, FileObservation, FileState, Level};
use crate::record::{self, DeviceRecord, NameKind, RecordError, Status};
use crate::timers::Moment;

impl Ctx {
    /// Ingests a complete listing: files not in it are gone (peers are kept, marked absent).
    pub fn ingest_listing(&mut self, files: &[FileObservation], held: bool) -> OwnFileNews {
        let mut news = OwnFileNews::Nothing;
        let mut listed = BTreeSet::new();
        for file in files {
            if let NameKind::Record { stem } = record::classify_name(&file.name) {
                listed.insert(stem);
            }
            news = news.merge(self.ingest_file(file, held));
        }
        for (stem, peer) in self.peers.iter_mut() {
            if !listed.contains(stem) {
                peer.present = false;
            }
        }
        if !listed.contains(&self.own_stem) {
            self.own_record_missing(held);
        }
        self.clear_report("<folder>");
        self.scanned_once = true;
        // What this listing showed may have been waiting for us (since before we started,
        // or while we slept): only changes that arrive later can be dated.
        self.watching_since.get_or_insert(self.now);
        news
    }

    /// Notes a folder that cannot be listed; forgets nobody.
    pub fn ingest_scan_failure(&mut self, reason: &str) {
        let message = format!(
            "cannot list the devices folder ({reason}); keeping the {} peers already known. \
             Check that the sync folder exists and is mounted.",
            self.peers.len()
        );
        self.report_once("<folder>", "scan_failed", Level::Warn, message);
    }

    /// Ingests one observed file. Returns what it says about our own record. `held`: our
    /// own writes wait (a Yielding device publishes only with the stop).
    pub fn ingest_file(&mut self, file: &FileObservation, held: bool) -> OwnFileNews {
        match record::classify_name(&file.name) {
            NameKind::Record { stem } if stem == self.own_stem => self.ingest_own(file, held),
            NameKind::Record { stem } => {
                self.ingest_peer(&stem, file);
                OwnFileNews::Nothing
            }
            NameKind::ConflictCopy { stem } => {
                if stem == self.own_stem && file.state != FileState::Gone {
                    self.emit(Effect::DeleteFile {
                        name: file.name.clone(),
                        reason: "a sync tool's conflict copy of our own record".into(),
                    });
                }
                OwnFileNews::Nothing
            }
            NameKind::IcloudStub { stem } => {
                if file.state != FileState::Gone {
                    self.report_once(
                        &file.name,
                        "stub",
                        Level::Warn,
                        format!(
                            "record {stem}.json is evicted by iCloud (\"{}\"); asking for a \
                             download. Pin the folder with \"Keep Downloaded\" or turn off \
                             Optimise Mac Storage.",
                            file.name
                        ),
                    );
                    self.emit(Effect::RequestDownload {
                        name: file.name.clone(),
                    });
                    self.note_unreadable(&stem);
                }
                OwnFileNews::Nothing
            }
            NameKind::Temp | NameKind::Foreign => OwnFileNews::Nothing,
        }
    }

    /// Reads a file's state into a record, reporting each kind of trouble once.
    fn read_record(&mut self, file: &FileObservation) -> Option<DeviceRecord> {
        let problem: Result<(), RecordError> = match &file.state {
            FileState::Contents { text } => match record::parse_record(text.as_bytes()) {
                Ok(parsed) => {
                    if record::file_stem(&parsed.device_id) != stem_of(&file.name) {
                        Err(RecordError::WrongFile {
                            found: parsed.device_id,
                        })
                    } else {
                        let mut parsed = parsed;
                        self.report_absurdities(&file.name, &mut parsed);
                        record::assert_sanitized(&parsed);
                        if parsed.is_newer_schema() {
                            let message = format!(
                                "{} was written by a newer baton (schema {}); treating it as \
                                 a live peer of unknown intent. Upgrade this device.",
                                file.name, parsed.schema
                            );
                            self.report_once(&file.name, "newer_schema", Level::Warn, message);
                        } else {
                            self.clear_report(&file.name);
                        }
                        return Some(parsed);
                    }
                }
                Err(error) => Err(error),
            },
            FileState::Gone => return None,
            FileState::TooLarge { bytes } => Err(RecordError::TooLarge {
                bytes: *bytes as usize,
            }),
            FileState::Dataless => {
                let message = format!(
                    "{} is evicted (dataless); asking for a download. Pin the folder with \
                     \"Keep Downloaded\" or turn off Optimise Mac Storage.",
                    file.name
                );
                self.report_once(&file.name, "dataless", Level::Warn, message);
                self.emit(Effect::RequestDownload {
                    name: file.name.clone(),
                });
                return None;
            }
            FileState::Symlink => {
                let message = format!("{} is a symlink; never followed, ignored", file.name);
                self.report_once(&file.name, "symlink", Level::Warn, message);
                return None;
            }
            FileState::Unreadable { reason } => {
                let message = format!("cannot read {} ({reason}); will retry", file.name);
                self.report_once(&file.name, "unreadable", Level::Warn, message);
                return None;
            }
        };
        if let Err(error) = problem {
            let message = format!(
                "ignoring {} for now: {error}; the last good copy is kept and it is re-read \
                 on the next change",
                file.name
            );
            self.report_once(&file.name, error.kind(), Level::Warn, message);
        }
        None
    }

    /// Sanitises a record's numbers (`record::sanitize`) and reports each absurd field
    /// once per file, until the file holds a sane value again.
    fn report_absurdities(&mut self, name: &str, parsed: &mut DeviceRecord) {
        const FIELDS: [&str; 4] = ["last_update_id", "progress_term", "term", "seq"];
        let found = record::sanitize(parsed);
        for field in FIELDS {
            if !found.iter().any(|a| a.field == field) {
                self.reported.remove(&format!("{name}#{field}"));
            }
        }
        for absurdity in found {
            let message = format!(
                "{name} ({}) holds an absurd number: {absurdity}. A corrupted or hand-edited \
                 record? Stop the device that writes it, or delete the file.",
                parsed.device_id
            );
            let key = format!("{name}#{}", absurdity.field);
            self.report_once(&key, "absurd", Level::Warn, message);
        }
    }

    fn ingest_peer(&mut self, stem: &str, file: &FileObservation) {
        if file.state == FileState::Gone {
            if let Some(peer) = self.peers.get_mut(stem) {
                peer.present = false;
            }
            return;
        }
        let Some(parsed) = self.read_record(file) else {
            self.note_unreadable(stem);
            return;
        };
        self.unreadable_peers.remove(stem);
        let (now, wall_ms, timing) = (self.now, self.wall_ms, self.timing);
        match self.peers.get_mut(stem) {
            Some(peer) => {
                peer.present = true;
                let newer = parsed.instance != peer.record.instance || parsed.seq > peer.record.seq;
                if newer {
                    peer.changed_at = now;
                    peer.record = parsed;
                }
            }
            None => {
                let changed_at = election::presumed_change(&parsed, now, wall_ms, &timing);
                let peer = PeerView {
                    stem: stem.to_string(),
                    record: parsed,
                    changed_at,
                    present: true,
                };
                self.peers.insert(stem.to_string(), peer);
            }
        }
        self.note_handoff_sighting(stem);
    }

    /// Remembers when a handoff addressed to us was first seen, and whether that moment
    /// dates its publication (see [`HandoffSighting::dated`]).
    fn note_handoff_sighting(&mut self, stem: &str) {
        let Some(peer) = self.peers.get(stem) else {
            return;
        };
        let Some(handoff) = peer.record.handoff.as_ref() else {
            return;
        };
        let to_me = peer.record.status == Status::Yielding && handoff.target == self.me();
        let seen = self
            .handoff_sighting
            .is_some_and(|s| s.term == handoff.term);
        if !to_me || seen {
            return;
        }
        let dated = self
            .watching_since
            .is_some_and(|since| self.now.since(since) >= self.timing.settle_bound());
        self.handoff_sighting = Some(HandoffSighting {
            term: handoff.term,
            first_seen: self.now,
            dated,
        });
    }

    /// Notes a record file of an unknown peer that cannot be read yet.
    fn note_unreadable(&mut self, stem: &str) {
        if stem != self.own_stem && !self.peers.contains_key(stem) {
            let now = self.now;
            self.unreadable_peers.entry(stem.to_string()).or_insert(now);
        }
    }

    /// Until when an unreadable record file must be presumed to be a live leader.
    pub fn unreadable_until(&self) -> Option<Moment> {
        self.unreadable_peers
            .values()
            .map(|first_seen| first_seen.plus(self.timing.liveness_active))
            .filter(|until| *until > self.now)
            .max()
    }

    /// Our record is not in the folder although we wrote it: deleted, or the whole
    /// folder deleted and made again. Peers must see us: write it again (not while a
    /// Yielding device waits to publish its handoff: that write comes with the stop).
    fn own_record_missing(&mut self, held: bool) {
        if self.last_write.is_none() || self.refused || held {
            return;
        }
        if self.reassert_own_record() {
            self.notify(
                Level::Warn,
                "this device's record is gone from the folder (deleted?): writing it again",
            );
        }
    }

    fn ingest_own(&mut self, file: &FileObservation, held: bool) -> OwnFileNews {
        if file.state == FileState::Gone {
            self.own_record_missing(held);
            return OwnFileNews::Nothing;
        }
        let Some(found) = self.read_record(file) else {
            return OwnFileNews::Nothing;
        };
        if found.instance == self.identity.instance {
            if found.seq < self.own.seq && self.last_write.is_some() {
                // The sync tool served an older copy of our own record: re-assert ours.
                self.reassert_own_record();
            }
            return OwnFileNews::Nothing;
        }
        let ours = found.install_id == self.identity.install_id;
        match &self.prior_own {
            None if self.last_write.is_none() => {
                self.prior_own = Some(PriorOwnRecord {
                    record: found,
                    ours,
                });
                OwnFileNews::Prior
            }
            Some(prior) if self.last_write.is_none() => {
                // Watched while registering (another install's record, or one of ours not
                // stopped cleanly): any change means another process is writing it.
                if found.seq != prior.record.seq || found.instance != prior.record.instance {
                    OwnFileNews::Duplicate(Box::new(found))
                } else {
                    OwnFileNews::Nothing
                }
            }
            Some(prior)
                if found.instance == prior.record.instance && found.seq <= prior.record.seq =>
            {
                // The record we found at start (a previous run's, or one we watched and
                // took over), seen again after our own write: an old copy (a late read,
                // or the sync tool serving a previous version), not a second writer.
                self.reassert_own_record();
                OwnFileNews::Nothing
            }
            _ if ours && found.seq <= self.own.seq => {
                // Our previous incarnation's copy resurfaced (we continued its seq, so it is
                // older): re-assert ours. A HIGHER seq from another instance of this install
                // means a second live process serves this directory: a duplicate.
                self.reassert_own_record();
                OwnFileNews::Nothing
            }
            _ => OwnFileNews::Duplicate(Box::new(found)),
        }
    }
}

/// What an observation said about the record at our own file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnFileNews {
    Nothing,
    /// A record from before this process started is there.
    Prior,
    /// Another live process writes our device id.
    Duplicate(Box<DeviceRecord>),
}

impl OwnFileNews {
    /// Keeps the most serious of two pieces of news.
    fn merge(self, other: OwnFileNews) -> OwnFileNews {
        match (&self, &other) {
            (OwnFileNews::Duplicate(_), _) => self,
            (_, OwnFileNews::Duplicate(_)) | (OwnFileNews::Nothing, _) => other,
            _ => self,
        }
    }
}

fn stem_of(name: &str) -> &str {
    name.strip_suffix(".json").unwrap_or(name)
}
