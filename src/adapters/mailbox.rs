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

use crate::core::mailbox::{MAIL_BYTES_MAX, Mail, MailError, Mailbox};
use crate::core::record::{self, NameKind};

use super::store::temp_name;

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

/// The mail folder of a group, seen from one device.
#[derive(Debug, Clone)]
pub struct MailFolder {
    dir: PathBuf,
    own_name: String,
}

pub fn mail_dir(sync_dir: &Path, group: &str) -> PathBuf {
    sync_dir.join(group).join("mail")
}

impl MailFolder {
    pub fn new(sync_dir: &Path, group: &str, own_device_id: &str) -> MailFolder {
        MailFolder {
            dir: mail_dir(sync_dir, group),
            own_name: record::file_name(own_device_id),
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

    /// Reads every mailbox (ours too), sorted by name. Blocking.
    pub fn read_all(&self) -> Result<Vec<ReadMailbox>, MailboxError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(MailboxError::List {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !matches!(record::classify_name(&name), NameKind::Record { .. }) {
                continue;
            }
            if found.len() >= MAILBOXES_MAX {
                break;
            }
            let mailbox = match read_bounded(&entry.path()) {
                Ok(Some(text)) => Mailbox::parse(&text, &name).map_err(|e| e.to_string()),
                Ok(None) => continue,
                Err(reason) => Err(reason),
            };
            found.push(ReadMailbox { name, mailbox });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
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

    /// Mail waiting per addressee (for `/devices`).
    pub async fn snapshot(&self) -> Mailbox {
        self.inner.lock().await.1.clone()
    }
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
        let read = folder.read_all().unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].mailbox.as_ref().unwrap().entries.len(), 1);
        let again = Outbox::open(folder.clone(), "host:/w");
        let continued = again.snapshot().await;
        assert_eq!(continued.epoch, epoch);
        assert_eq!(again.post(mail).await.unwrap(), 2);
    }
}
