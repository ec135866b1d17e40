//! The mailbox folder: `<sync-root>/<group>/mail/`, one file per writer (issue 11).
//!
//! Owns: writing OUR mailbox atomically with the records' discipline (a temp name every
//! sync tool skips, `store::temp_name`, then fsync, mode 0600, rename in the same
//! folder), reading every mailbox with a bound ([`MAIL_BYTES_MAX`], no symlink followed),
//! and the [`Outbox`]: the writer's mailbox in memory, posted to by the poller and pruned
//! by the runtime, each change on disk before it returns. The rules (format, bounds,
//! pruning, what a reader delivers) are the core's (`baton_core::mailbox`). Must never:
//! write a file but its own, follow a symlink, read past the bound, or run on the event
//! loop (every call here blocks: `spawn_blocking`, with a timeout for reads).
//!
//! Names a sync tool leaves (iCloud `name 2.json`, conflict copies, stubs, temp files)
//! are classified as records are (`record::classify_name`) and only canonical names are
//! read: a conflict copy of a mailbox holds nothing its canonical file has not held.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeSet;

use crate::core::mailbox::{MAIL_BYTES_MAX, Mail, MailError, Mailbox, Origin};
use crate::core::record::{self, NameKind};

use super::store::{DownloadAsks, temp_name};

/// Mailboxes read per look, at most (one per device of the group).
const MAILBOXES_MAX: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("cannot write the mailbox {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot list the mail folder {path}: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Mail(#[from] MailError),
}

/// One mailbox as read: its file name and what it held.
#[derive(Debug)]
pub struct ReadMailbox {
    pub name: String,
    pub mailbox: Result<Mailbox, String>,
}

/// Every mailbox of the folder as one look found it.
#[derive(Debug, Default)]
pub struct MailListing {
    pub mailboxes: Vec<ReadMailbox>,
    /// Mailboxes iCloud evicted (a `.name.json.icloud` stub, or a dataless file on
    /// Sonoma and later), by their real names: not read (a read would block while
    /// fileproviderd downloads), to be asked for ([`MailFolder::request_download`]).
    pub evicted: Vec<String>,
}

/// The mail folder of a group, seen from one device.
#[derive(Debug, Clone)]
pub struct MailFolder {
    dir: PathBuf,
    own_name: String,
    /// Downloads asked for (one ask a minute per mailbox at most, as for records).
    downloads: DownloadAsks,
}

pub fn mail_dir(sync_dir: &Path, group: &str) -> PathBuf {
    sync_dir.join(group).join("mail")
}

impl MailFolder {
    pub fn new(sync_dir: &Path, group: &str, own_device_id: &str) -> MailFolder {
        MailFolder {
            dir: mail_dir(sync_dir, group),
            own_name: record::file_name(own_device_id),
            downloads: DownloadAsks::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn own_name(&self) -> &str {
        &self.own_name
    }

    pub fn ensure_dir(&self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)
    }

    /// Writes our mailbox: temp name, fsync, 0600, rename. Blocking.
    pub fn write_own(&self, mailbox: &Mailbox) -> Result<(), MailboxError> {
        let final_path = self.dir.join(&self.own_name);
        let temp_path = self.dir.join(temp_name(&self.own_name));
        let write = || -> io::Result<()> {
            fs::create_dir_all(&self.dir)?;
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
            }
            let mut file = options.open(&temp_path)?;
            file.write_all(mailbox.to_json().as_bytes())?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temp_path, &final_path)
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&temp_path);
            MailboxError::Write {
                path: final_path,
                source,
            }
        })
    }

    /// Our own mailbox as a previous run left it (`None`: none, or unreadable).
    pub fn read_own(&self) -> Option<Mailbox> {
        let text = read_bounded(&self.dir.join(&self.own_name)).ok()??;
        Mailbox::parse(&text, &self.own_name).ok()
    }

    /// Reads every mailbox (ours too), sorted by name, and names the evicted ones.
    /// Blocking.
    pub fn read_all(&self) -> Result<MailListing, MailboxError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(MailListing::default());
            }
            Err(source) => {
                return Err(MailboxError::List {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut found = Vec::new();
        let mut evicted = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if found.len() + evicted.len() >= MAILBOXES_MAX {
                break;
            }
            match record::classify_name(&name) {
                NameKind::Record { .. } => {}
                NameKind::IcloudStub { stem } => {
                    evicted.push(format!("{stem}.json"));
                    continue;
                }
                _ => continue,
            }
            if fs::symlink_metadata(entry.path()).is_ok_and(|meta| super::store::is_dataless(&meta))
            {
                evicted.push(name);
                continue;
            }
            let mailbox = match read_bounded(&entry.path()) {
                Ok(Some(text)) => Mailbox::parse(&text, &name).map_err(|e| e.to_string()),
                Ok(None) => continue,
                Err(reason) => Err(reason),
            };
            found.push(ReadMailbox { name, mailbox });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        evicted.sort();
        evicted.dedup();
        Ok(MailListing {
            mailboxes: found,
            evicted,
        })
    }

    /// Asks the sync tool to download an evicted mailbox (`name`: its real name), at
    /// most once a minute per mailbox: mail in it may be ours, and an evicted file stays
    /// evicted until someone asks. On macOS `brctl download PATH`, not waited for (tokio
    /// reaps it), as the store does for records; elsewhere there is nothing to ask.
    /// Returns whether it asked.
    pub fn request_download(&self, name: &str) -> bool {
        self.downloads.ask(&self.dir, name)
    }
}

/// Reads a regular file of at most [`MAIL_BYTES_MAX`] bytes; `Ok(None)` when gone.
fn read_bounded(path: &Path) -> Result<Option<String>, String> {
    let file = match super::store::open_no_follow(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.to_string()),
    };
    match file.metadata() {
        Ok(meta) if !meta.is_file() => return Err("not a regular file".into()),
        Err(error) => return Err(error.to_string()),
        Ok(_) => {}
    }
    let mut bytes = Vec::new();
    file.take(MAIL_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| error.to_string())?;
    if bytes.len() > MAIL_BYTES_MAX {
        return Err(format!("over the {MAIL_BYTES_MAX}-byte limit"));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The writer's mailbox: in memory, and on disk before any call returns. Shared by the
/// poller (posting, before it confirms an update) and the runtime (pruning).
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<tokio::sync::Mutex<(MailFolder, Mailbox)>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    /// Continues the mailbox a previous run left (its epoch and undelivered mail), or
    /// starts a new epoch. Blocking (one bounded read).
    pub fn open(folder: MailFolder, device_id: &str) -> Outbox {
        let mailbox = folder.read_own().unwrap_or_else(|| {
            let epoch: u64 = rand::random();
            Mailbox::new(device_id, &format!("{epoch:016x}"))
        });
        Outbox {
            inner: Arc::new(tokio::sync::Mutex::new((folder, mailbox))),
        }
    }

    /// Posts one mail and writes the mailbox; on any failure nothing was added.
    pub async fn post(&self, mail: Mail) -> Result<u64, MailboxError> {
        let mut guard = self.inner.lock().await;
        let seq = guard.1.post(mail)?;
        let (folder, snapshot) = (guard.0.clone(), guard.1.clone());
        let written = tokio::task::spawn_blocking(move || folder.write_own(&snapshot)).await;
        match written {
            Ok(Ok(())) => Ok(seq),
            Ok(Err(error)) => {
                guard.1.entries.retain(|mail| mail.seq != seq);
                Err(error)
            }
            Err(join) => {
                guard.1.entries.retain(|mail| mail.seq != seq);
                Err(MailboxError::Write {
                    path: guard.0.dir().to_path_buf(),
                    source: io::Error::other(join.to_string()),
                })
            }
        }
    }

    /// Deletes delivered and expired mail (the core's rule) and writes the mailbox when
    /// anything went; returns how many went.
    pub async fn prune(&self, records: Vec<record::DeviceRecord>, now_wall_ms: u64) -> usize {
        let mut guard = self.inner.lock().await;
        let deleted = guard.1.prune(&records, now_wall_ms);
        if deleted.is_empty() {
            return 0;
        }
        for (seq, why) in &deleted {
            tracing::debug!(seq, why, "mail deleted");
        }
        let (folder, snapshot) = (guard.0.clone(), guard.1.clone());
        match tokio::task::spawn_blocking(move || folder.write_own(&snapshot)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot rewrite the mailbox after delivery"),
            Err(error) => tracing::warn!(%error, "the mailbox writer task failed"),
        }
        deleted.len()
    }

    /// Posts one mail after giving the mail of its topic still addressed to another
    /// device to this mail's addressee (the owner changed: see
    /// [`Mailbox::readdress`]), so the topic's mail stays in order. One write; on any
    /// failure nothing changed.
    /// `records`: every record we know (their acknowledgements: delivered mail stays).
    pub async fn post_for_topic(
        &self,
        mail: Mail,
        records: &[record::DeviceRecord],
        live: &BTreeSet<String>,
    ) -> Result<u64, MailboxError> {
        let mut guard = self.inner.lock().await;
        let before = guard.1.clone();
        let (chat, thread, to) = (mail.chat_id, mail.thread_id, mail.to.clone());
        let moved = guard.1.readdress(
            records,
            |c, t| (c == chat && t == thread).then(|| to.clone()),
            |device| live.contains(device),
        );
        let posted = guard.1.post(mail);
        let seq = match posted {
            Ok(seq) => seq,
            Err(error) => {
                guard.1 = before;
                return Err(error.into());
            }
        };
        let (folder, snapshot) = (guard.0.clone(), guard.1.clone());
        match tokio::task::spawn_blocking(move || folder.write_own(&snapshot)).await {
            Ok(Ok(())) => {
                log_moved(&moved);
                Ok(seq)
            }
            Ok(Err(error)) => {
                guard.1 = before;
                Err(error)
            }
            Err(join) => {
                guard.1 = before;
                Err(MailboxError::Write {
                    path: guard.0.dir().to_path_buf(),
                    source: io::Error::other(join.to_string()),
                })
            }
        }
    }

    /// The writer's upkeep after every look at the mail folder: deletes delivered and
    /// expired mail, counts mail delivered twice across an owner change, drops our mail
    /// another writer adopted while we were away, gives mail whose addressee no longer
    /// owns its topic to the owner (`owner`: see [`Mailbox::readdress`]), and — when
    /// `adopt` (we are the active device) — takes over such mail from the mailboxes of
    /// writers that are not live (`orphaned`). Writes our mailbox once, when anything
    /// changed. Returns what changed, for the log and the tests.
    pub async fn maintain(&self, upkeep: Upkeep<'_>) -> UpkeepDone {
        let Upkeep {
            records,
            now_wall_ms,
            owner,
            live,
            others,
            orphaned,
            adopt,
        } = upkeep;
        let mut guard = self.inner.lock().await;
        let mut done = UpkeepDone {
            deleted: guard.1.prune(records, now_wall_ms).len(),
            ..UpkeepDone::default()
        };
        for twice in guard.1.twice_delivered(records) {
            tracing::warn!(
                update_id = twice.update_id,
                device = %twice.from,
                "an update reached its topic twice: its old owner had fetched it before it went offline, and it was moved to the new owner"
            );
            done.twice += 1;
        }
        for twice in guard.1.adopted_also_delivered(others, records) {
            tracing::warn!(
                update_id = twice.update_id,
                device = %twice.from,
                "an update reached its topic twice: its old owner served it as it came back, and it had been taken over for the new owner"
            );
            done.twice += 1;
        }
        let adopted_elsewhere: BTreeSet<Origin> = others
            .iter()
            .flat_map(|mailbox| mailbox.adopted.iter().cloned())
            .collect();
        let dropped = guard.1.drop_adopted(&adopted_elsewhere);
        done.deleted += dropped.len();
        let addressee_live = |device: &str| live.contains(device);
        let moved = guard.1.readdress(records, owner, addressee_live);
        log_moved(&moved);
        done.moved = moved.len();
        if adopt {
            done.adopted = adopt_orphans(&mut guard.1, records, owner, live, others, orphaned);
        }
        let adopted_before = guard.1.adopted.len();
        guard.1.forget_adopted(|origin| {
            others.iter().any(|mailbox| {
                mailbox.writer == origin.writer
                    && mailbox.epoch == origin.epoch
                    && mailbox.entries.iter().any(|mail| mail.seq == origin.seq)
            })
        });
        let forgot = adopted_before != guard.1.adopted.len();
        if done.deleted + done.twice + done.moved + done.adopted == 0 && !forgot {
            return done;
        }
        let (folder, snapshot) = (guard.0.clone(), guard.1.clone());
        match tokio::task::spawn_blocking(move || folder.write_own(&snapshot)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot rewrite the mailbox"),
            Err(error) => tracing::warn!(%error, "the mailbox writer task failed"),
        }
        done
    }

    /// Mail waiting per addressee (for `/devices`).
    pub async fn snapshot(&self) -> Mailbox {
        self.inner.lock().await.1.clone()
    }
}

/// What the writer's upkeep needs ([`Outbox::maintain`]).
pub struct Upkeep<'a> {
    /// Every record we know, ours included.
    pub records: &'a [record::DeviceRecord],
    pub now_wall_ms: u64,
    /// Who owns a topic now (`None`: leave its mail as it is; `Some(None)`: nobody).
    pub owner: &'a dyn Fn(i64, Option<i64>) -> Option<Option<String>>,
    /// The devices that are live: mail addressed to one stays with it.
    pub live: &'a BTreeSet<String>,
    /// Every other writer's mailbox as read.
    pub others: &'a [Mailbox],
    /// The writers among `others` that are not live (their mail may be adopted).
    pub orphaned: &'a BTreeSet<String>,
    /// Whether we adopt orphaned mail (only the active device does).
    pub adopt: bool,
}

/// What one upkeep changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpkeepDone {
    pub deleted: usize,
    pub moved: usize,
    pub adopted: usize,
    pub twice: usize,
}

fn log_moved(moved: &[crate::core::mailbox::Readdressed]) {
    for m in moved.iter().filter(|m| m.from != m.to) {
        tracing::info!(
            update_id = m.update_id,
            from = ?m.from,
            to = ?m.to,
            "mail moved to its topic's current owner"
        );
    }
}

/// Takes over the mail of writers that are not live, addressed to devices that no
/// longer own their topics; returns how many.
fn adopt_orphans(
    own: &mut Mailbox,
    records: &[record::DeviceRecord],
    owner: &dyn Fn(i64, Option<i64>) -> Option<Option<String>>,
    live: &BTreeSet<String>,
    others: &[Mailbox],
    orphaned: &BTreeSet<String>,
) -> usize {
    let mut adopted_anywhere: BTreeSet<Origin> = own.adopted.iter().cloned().collect();
    adopted_anywhere.extend(others.iter().flat_map(|m| m.adopted.iter().cloned()));
    let mut count = 0;
    for orphan in others.iter().filter(|m| orphaned.contains(&m.writer)) {
        let addressee_live = |device: &str| live.contains(device);
        for (mail, to) in
            Mailbox::orphans(orphan, records, owner, addressee_live, &adopted_anywhere)
        {
            let origin = orphan.origin_of(mail);
            match own.adopt(origin, mail.clone(), to.clone()) {
                Ok(_) => {
                    tracing::info!(
                        update_id = mail.update_id,
                        writer = %orphan.writer,
                        from = ?mail.to,
                        to = ?to,
                        "mail of a writer that is gone taken over for its topic's current owner"
                    );
                    count += 1;
                }
                Err(error) => {
                    tracing::warn!(%error, writer = %orphan.writer, "cannot take over mail of a writer that is gone; it waits");
                    return count;
                }
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn the_outbox_survives_a_restart_and_skips_conflict_copies() {
        let dir = tempfile::tempdir().unwrap();
        let folder = MailFolder::new(dir.path(), "g", "host:/w");
        let outbox = Outbox::open(folder.clone(), "host:/w");
        let mail = Mail {
            seq: 0,
            update_id: 7,
            chat_id: -1,
            thread_id: Some(5),
            to: Some("host:/r".into()),
            queued_at_ms: 1,
            payload: json!({"update_id": 7}),
        };
        assert_eq!(outbox.post(mail.clone()).await.unwrap(), 1);
        let epoch = outbox.snapshot().await.epoch;
        // A conflict copy and a temp file are not mailboxes.
        let stem = record::file_stem("host:/w");
        fs::write(folder.dir().join(format!("{stem} 2.json")), "{}").unwrap();
        fs::write(folder.dir().join(temp_name(folder.own_name())), "{").unwrap();
        let read = folder.read_all().unwrap().mailboxes;
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].mailbox.as_ref().unwrap().entries.len(), 1);
        let again = Outbox::open(folder.clone(), "host:/w");
        let continued = again.snapshot().await;
        assert_eq!(continued.epoch, epoch);
        assert_eq!(again.post(mail).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn an_evicted_mailbox_is_named_for_download_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let folder = MailFolder::new(dir.path(), "g", "host:/r");
        folder.ensure_dir().unwrap();
        // iCloud evicted the writer's mailbox: only its stub is left.
        let writer_name = record::file_name("host:/w");
        let stem = record::file_stem("host:/w");
        fs::write(folder.dir().join(format!(".{stem}.json.icloud")), "stub").unwrap();
        let listing = folder.read_all().unwrap();
        assert!(listing.mailboxes.is_empty());
        assert_eq!(listing.evicted, std::slice::from_ref(&writer_name));
        // Asked for once a minute at most.
        assert!(folder.request_download(&writer_name));
        assert!(!folder.request_download(&writer_name));
        assert!(
            folder
                .clone()
                .request_download(&record::file_name("host:/other"))
        );
    }
}
