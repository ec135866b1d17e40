//! The store: the devices folder on disk, `<sync-root>/<group>/devices/`.
//!
//! Owns: atomic writes of OUR record (temp file the sync tools skip, then rename in the
//! same directory, mode 0600), bounded reads of any file into a
//! [`FileObservation`](crate::core::FileObservation), folder listings (bounded by the
//! record-like names they hold: junk is counted, never allowed to push a record out),
//! deleting what the core asks (our conflict copies; records past retention), and asking
//! iCloud for evicted files. Must never: follow a symlink, read more than the record limit, write any name
//! but our own record and its temp file, or block the event loop (callers run these
//! functions on a blocking thread with a timeout: see [`Store::observe_bounded`]).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::record::{self, DeviceRecord, NameKind, RECORD_BYTES_MAX};
use crate::core::{FileObservation, FileState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create the devices folder {path}: {source}. Check that the sync folder exists and is writable"
    )]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot list {path}: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("cannot delete {path}: {source}")]
    Delete { path: PathBuf, source: io::Error },
    #[error("BUG: refused to touch {name:?}, which is not this device's own file")]
    NotOurs { name: String },
    #[error("reading {name} took longer than {timeout:?} (an evicted iCloud file?)")]
    Timeout { name: String, timeout: Duration },
    #[error(
        "{path} holds more than {limit} {what}; that is not a devices folder (a script \
         writing into it?): clean it up"
    )]
    Overfull {
        path: PathBuf,
        limit: usize,
        what: &'static str,
    },
}

/// The identity of the folder at a path (see [`Store::folder_identity`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FolderIdentity {
    pub device: u64,
    pub inode: u64,
    pub created: Option<std::time::SystemTime>,
}

/// One listing of the devices folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Every record-like file (records, conflict copies, stubs), read, sorted by name.
    pub files: Vec<FileObservation>,
    /// Names that are neither records nor temp files: junk, skipped and counted.
    pub junk: usize,
}

/// Junk files in the devices folder worth a warning (a `.DS_Store` or two is normal).
pub const JUNK_WARN_MIN: usize = 100;

impl Listing {
    /// A warning for the user when the folder holds a lot of junk.
    pub fn junk_warning(&self, devices_dir: &Path) -> Option<String> {
        (self.junk >= JUNK_WARN_MIN).then(|| {
            format!(
                "the devices folder {} holds {} files that are not records (junk); they are \
                 skipped, but slow every listing down: remove them",
                devices_dir.display(),
                self.junk
            )
        })
    }
}

/// The devices folder of one group, seen from one device.
#[derive(Clone, Debug)]
pub struct Store {
    devices_dir: PathBuf,
    own_name: String,
    downloads: DownloadAsks,
}

/// One `brctl download` per file per this long at most.
const DOWNLOAD_ASK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Asks the sync tool to download evicted files of one folder (records, mail), at most
/// once per [`DOWNLOAD_ASK_INTERVAL`] per file: a file that stays evicted is seen on
/// every rescan, and each ask starts a process. Clones share the memory.
#[derive(Clone, Debug, Default)]
pub(crate) struct DownloadAsks(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
);

impl DownloadAsks {
    /// Asks for `dir/name` unless it was asked for within the interval. On macOS:
    /// `brctl download PATH`, not waited for (tokio reaps it); elsewhere there is nothing
    /// to ask. Returns whether it asked.
    pub(crate) fn ask(&self, dir: &Path, name: &str) -> bool {
        {
            let mut asked = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            if asked
                .get(name)
                .is_some_and(|at| now.duration_since(*at) < DOWNLOAD_ASK_INTERVAL)
            {
                return false;
            }
            asked.retain(|_, at| now.duration_since(*at) < DOWNLOAD_ASK_INTERVAL);
            asked.insert(name.to_owned(), now);
        }
        let path = dir.join(name);
        if cfg!(target_os = "macos") {
            let spawned = tokio::process::Command::new("brctl")
                .arg("download")
                .arg(&path)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            if let Err(error) = spawned {
                tracing::warn!(path = %path.display(), %error, "cannot run brctl download");
            }
        } else {
            tracing::debug!(path = %path.display(), "download requested; nothing to do off macOS");
        }
        true
    }
}

impl Store {
    pub fn new(sync_dir: &Path, group: &str, own_device_id: &str) -> Self {
        Store {
            devices_dir: devices_dir(sync_dir, group),
            own_name: record::file_name(own_device_id),
            downloads: Default::default(),
        }
    }

    pub fn devices_dir(&self) -> &Path {
        &self.devices_dir
    }

    pub fn own_name(&self) -> &str {
        &self.own_name
    }

    /// Which folder is at the devices folder's path right now (device, inode and
    /// creation time): a folder deleted and made again, or swapped, has another
    /// identity, and a watch on the old one hears nothing of the new one. File systems
    /// reuse a freed inode number at once (ext4 does), hence the creation time, where
    /// the file system keeps one.
    pub fn folder_identity(&self) -> io::Result<FolderIdentity> {
        let meta = fs::metadata(&self.devices_dir)?;
        let created = meta.created().ok();
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Ok(FolderIdentity {
                device: meta.dev(),
                inode: meta.ino(),
                created,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(FolderIdentity {
                created,
                ..FolderIdentity::default()
            })
        }
    }

    /// Creates the devices folder if needed.
    pub fn ensure_dir(&self) -> Result<(), StoreError> {
        fs::create_dir_all(&self.devices_dir).map_err(|source| StoreError::CreateDir {
            path: self.devices_dir.clone(),
            source,
        })
    }

    /// The name our record is written under before the rename: [`temp_name`].
    pub fn temp_name(&self) -> String {
        temp_name(&self.own_name)
    }

    /// Writes our record atomically: [`temp_name`] (skipped by every sync tool), fsync,
    /// mode 0600, rename over `<name>` in the same directory.
    pub fn write_record(&self, record: &DeviceRecord) -> Result<(), StoreError> {
        let name = record::file_name(&record.device_id);
        if name != self.own_name {
            return Err(StoreError::NotOurs { name });
        }
        let final_path = self.devices_dir.join(&name);
        let temp_path = self.devices_dir.join(temp_name(&name));
        let write = || -> io::Result<()> {
            let mut file = open_private(&temp_path)?;
            file.write_all(record.to_json().as_bytes())?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temp_path, &final_path)
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&temp_path);
            StoreError::Write {
                path: final_path.clone(),
                source,
            }
        })
    }

    /// Deletes a file the core named. Only our own conflict copies and record files
    /// (retention sweep) are accepted; anything else is refused.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        let own_stem = self.own_name.trim_end_matches(".json");
        let allowed = match record::classify_name(name) {
            NameKind::ConflictCopy { stem } => stem == own_stem,
            // Records past retention are swept by the active device; never our own.
            NameKind::Record { stem } => stem != own_stem,
            _ => false,
        };
        if !allowed || name.contains('/') {
            return Err(StoreError::NotOurs {
                name: name.to_string(),
            });
        }
        let path = self.devices_dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Delete { path, source }),
        }
    }

    /// Lists the folder and reads every record-like file. Blocking: run on a blocking
    /// thread.
    pub fn scan(&self) -> Result<Vec<FileObservation>, StoreError> {
        self.list().map(|listing| listing.files)
    }

    /// Lists the folder: every record-like name is read; temp names are skipped; other
    /// names are junk, skipped and counted. Junk never pushes a record out: the bound
    /// counts record-like names only, and a folder past either bound is an error (the
    /// peers already known are kept), never a listing with records silently missing.
    pub fn list(&self) -> Result<Listing, StoreError> {
        let entries = fs::read_dir(&self.devices_dir).map_err(|source| StoreError::List {
            path: self.devices_dir.clone(),
            source,
        })?;
        let overfull = |limit, what| StoreError::Overfull {
            path: self.devices_dir.clone(),
            limit,
            what,
        };
        let mut listing = Listing::default();
        for (examined, entry) in entries.flatten().enumerate() {
            if examined >= LISTING_ENTRIES_EXAMINED_MAX {
                return Err(overfull(LISTING_ENTRIES_EXAMINED_MAX, "entries"));
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            match record::classify_name(&name) {
                NameKind::Temp => {}
                NameKind::Foreign => listing.junk += 1,
                _ if listing.files.len() >= LISTING_RECORDS_MAX => {
                    return Err(overfull(LISTING_RECORDS_MAX, "record-like files"));
                }
                _ => listing.files.push(observe_path(&entry.path(), name)),
            }
        }
        listing.files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    /// Reads one file by name. Blocking.
    pub fn observe(&self, name: &str) -> FileObservation {
        observe_path(&self.devices_dir.join(name), name.to_string())
    }

    /// Reads one file on a blocking thread, giving up after `timeout` (a dataless iCloud
    /// file can block a read for as long as the download takes).
    pub async fn observe_bounded(&self, name: String, timeout: Duration) -> FileObservation {
        let store = self.clone();
        let read_name = name.clone();
        let task = tokio::task::spawn_blocking(move || store.observe(&read_name));
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(observation)) => observation,
            Ok(Err(join_error)) => FileObservation {
                name,
                state: FileState::Unreadable {
                    reason: format!("reader failed: {join_error}"),
                },
            },
            Err(_) => FileObservation {
                state: FileState::Unreadable {
                    reason: StoreError::Timeout {
                        name: name.clone(),
                        timeout,
                    }
                    .to_string(),
                },
                name,
            },
        }
    }

    /// Lists the folder on a blocking thread, with a timeout.
    pub async fn scan_bounded(&self, timeout: Duration) -> Result<Listing, String> {
        let store = self.clone();
        let task = tokio::task::spawn_blocking(move || store.list());
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result.map_err(|error| error.to_string()),
            Ok(Err(join_error)) => Err(format!("lister failed: {join_error}")),
            Err(_) => Err(format!("listing took longer than {timeout:?}")),
        }
    }

    /// Asks the sync tool to download an evicted file, at most once a minute per file.
    /// On macOS: `brctl download PATH`, not waited for (tokio reaps it); elsewhere there
    /// is nothing to ask. Returns whether it asked.
    pub fn request_download(&self, name: &str) -> bool {
        let real_name = match record::classify_name(name) {
            NameKind::IcloudStub { stem } => format!("{stem}.json"),
            _ => name.to_string(),
        };
        self.downloads.ask(&self.devices_dir, &real_name)
    }
}

/// A bound on the record-like names of one listing (records, conflict copies, stubs):
/// a folder with more is not a devices folder. Junk does not count towards it.
const LISTING_RECORDS_MAX: usize = 10_000;
/// A bound on the entries one listing looks at, junk included (the loop's own bound;
/// the runtime's read timeout bounds its time).
const LISTING_ENTRIES_EXAMINED_MAX: usize = 1_000_000;

/// The temp name a record is written under before its rename:
/// `~syncthing~<name>.tmp`. The rename must stay in the devices folder (only a rename
/// within one file system is atomic, and nothing else of the sync folder is known to be
/// on the record's file system and writable), so the temp file lives where the sync
/// tool watches, and its name must be one every sync tool skips:
///
/// - iCloud Drive does not sync names ending in `.tmp` (FACTS.md);
/// - Syncthing never syncs its own temp names, and its `fs.IsTemporary` recognises both
///   of its prefixes, `.syncthing.` and `~syncthing~`, on every platform, ahead of any
///   `.stignore` (which belongs to the user, not to baton);
/// - Dropbox skips temporary files that start with `~` and end in `.tmp`.
///
/// The former `.<name>.tmp` matched only iCloud's rule: Syncthing indexed it in the
/// instant before the rename and left `.syncthing..<name>.tmp.tmp` files on its peers.
pub fn temp_name(record_name: &str) -> String {
    format!("~syncthing~{record_name}.tmp")
}

pub fn devices_dir(sync_dir: &Path, group: &str) -> PathBuf {
    sync_dir.join(group).join("devices")
}

fn open_private(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Reads one path without following symlinks and without reading past the limit.
pub fn observe_path(path: &Path, name: String) -> FileObservation {
    let state = match fs::symlink_metadata(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => FileState::Gone,
        Err(error) => FileState::Unreadable {
            reason: error.to_string(),
        },
        Ok(meta) if meta.file_type().is_symlink() => FileState::Symlink,
        Ok(meta) if !meta.is_file() => FileState::Unreadable {
            reason: "not a regular file".into(),
        },
        Ok(meta) if meta.len() > RECORD_BYTES_MAX as u64 => {
            FileState::TooLarge { bytes: meta.len() }
        }
        Ok(meta) if is_dataless(&meta) => FileState::Dataless,
        Ok(_) => read_bounded(path),
    };
    FileObservation { name, state }
}

/// Opens `path` for reading without following a symlink (one swapped in between a stat
/// and the open is refused) and without blocking on a FIFO. Shared by every bounded
/// read of the synced folder (records here, mail in `mailbox.rs`).
pub(crate) fn open_no_follow(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    options.open(path)
}

fn read_bounded(path: &Path) -> FileState {
    let file = match open_no_follow(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return FileState::Gone,
        Err(error) => {
            return FileState::Unreadable {
                reason: error.to_string(),
            };
        }
    };
    let mut bytes = Vec::with_capacity(2048);
    match file
        .take(RECORD_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
    {
        Ok(_) if bytes.len() > RECORD_BYTES_MAX => FileState::TooLarge {
            bytes: bytes.len() as u64,
        },
        Ok(_) => FileState::Contents {
            text: String::from_utf8_lossy(&bytes).into_owned(),
        },
        Err(error) => FileState::Unreadable {
            reason: error.to_string(),
        },
    }
}

/// Sonoma and later keep an evicted iCloud file at its path with its size but no
/// allocated blocks ("dataless"); reading it blocks while fileproviderd downloads it.
#[cfg(target_os = "macos")]
pub(crate) fn is_dataless(meta: &fs::Metadata) -> bool {
    use std::os::darwin::fs::MetadataExt;
    const SF_DATALESS: u32 = 0x4000_0000;
    meta.st_flags() & SF_DATALESS != 0 || (meta.len() > 0 && meta.st_blocks() == 0)
}

#[cfg(not(target_os = "macos"))]
pub(crate) fn is_dataless(_meta: &fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_that_stays_evicted_is_asked_for_once_a_minute_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "g", "host:/me");
        let peer = record::file_name("host:/peer");
        let stub = format!(".{}.icloud", peer);
        assert!(store.request_download(&peer));
        assert!(
            !store.request_download(&stub),
            "the stub names the same file"
        );
        assert!(!store.clone().request_download(&peer), "clones share it");
        assert!(store.request_download(&record::file_name("host:/other")));
    }
}
