//! The watcher: one recursive notify watch on the devices folder, turned into the
//! program's own [`WatchSignal`]s.
//!
//! Owns: creating the watch ONCE (notify#993: adding or removing watches recreates the
//! macOS stream and loses queued events), mapping notify events to file names (hints
//! only: the runtime always re-reads the real files), `Rescan` for notify's rescan flag
//! and for a full channel, `Failed` when the watched folder itself is removed (the
//! runtime then looks at what is at the path now), and the `--poll` fallback for folders
//! that never send events (network and FUSE mounts). Must never: read a file, block the
//! notify thread, or decide anything. Drop policy: the channel is bounded; when it is
//! full the event is dropped and a rescan is flagged, so nothing is lost, only coalesced.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::RecursiveMode;
use tokio::sync::mpsc;

/// What the watcher tells the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchSignal {
    /// These names (in the devices folder) may have changed.
    Changed(BTreeSet<String>),
    /// Events were lost or the backend asked for it: list everything again.
    Rescan { reason: String },
    /// The watch reported an error (the folder vanished?); the runtime re-creates it.
    Failed { reason: String },
}

/// Bound on signals waiting for the runtime.
pub const SIGNALS_MAX: usize = 256;

/// A live watch; dropping it stops watching.
pub struct FolderWatch {
    _watcher: Box<dyn notify::Watcher + Send>,
    pub dir: PathBuf,
}

/// How to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// FSEvents on macOS, inotify on Linux.
    Native,
    /// Stat the folder every interval (for mounts that send no events).
    Poll(Duration),
}

/// Starts one recursive watch on `dir`, sending signals to `tx`. Scan once AFTER this
/// returns: `watch()` can return before the OS has registered the stream.
pub fn watch(
    dir: &Path,
    mode: WatchMode,
    tx: mpsc::Sender<WatchSignal>,
) -> Result<FolderWatch, notify::Error> {
    let overflowed = Arc::new(AtomicBool::new(false));
    let root = Roots::of(dir);
    let handler = move |result: notify::Result<notify::Event>| {
        let signal = match result {
            Ok(event) if event.need_rescan() => WatchSignal::Rescan {
                reason: "the watcher dropped events".into(),
            },
            // inotify reports opens (notify watches IN_OPEN) and read-only closes: baton's
            // own reads would come back as changes, each re-read causing the next.
            Ok(event) if is_read_only(&event.kind) => return,
            // The watched folder itself was removed: this watch will hear nothing more.
            Ok(event)
                if matches!(event.kind, notify::EventKind::Remove(_))
                    && event.paths.iter().any(|path| root.holds(path)) =>
            {
                WatchSignal::Failed {
                    reason: "the watched folder was removed".into(),
                }
            }
            Ok(event) => {
                let names: BTreeSet<String> = event
                    .paths
                    .iter()
                    .filter_map(|path| name_in(&root, path))
                    .collect();
                if names.is_empty() {
                    return;
                }
                WatchSignal::Changed(names)
            }
            Err(error) => WatchSignal::Failed {
                reason: error.to_string(),
            },
        };
        if overflowed.swap(false, Ordering::AcqRel) {
            let reason = "the event channel was full".to_string();
            if tx.try_send(WatchSignal::Rescan { reason }).is_err() {
                overflowed.store(true, Ordering::Release);
            }
        }
        if tx.try_send(signal).is_err() {
            overflowed.store(true, Ordering::Release);
        }
    };
    let mut watcher: Box<dyn notify::Watcher + Send> = match mode {
        WatchMode::Native => Box::new(notify::recommended_watcher(handler)?),
        WatchMode::Poll(interval) => Box::new(notify::PollWatcher::new(
            handler,
            notify::Config::default().with_poll_interval(interval),
        )?),
    };
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(FolderWatch {
        _watcher: watcher,
        dir: dir.to_path_buf(),
    })
}

/// An access that changes nothing: an open, a read, a close after reading. A close
/// after writing (`IN_CLOSE_WRITE`) does count: a write just finished.
fn is_read_only(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(
        kind,
        notify::EventKind::Access(
            AccessKind::Open(_)
                | AccessKind::Read
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute)
        )
    )
}

/// The watched folder as given and as the OS reports it. FSEvents reports real paths:
/// with a symlink on the way (`/tmp`, `/var/folders`, a `~/Dropbox` link into
/// `~/Library/CloudStorage`) or another letter case on a case-insensitive volume, an
/// event's folder differs from the path baton was given.
struct Roots {
    given: PathBuf,
    real: Option<PathBuf>,
}

impl Roots {
    fn of(dir: &Path) -> Self {
        Roots {
            given: dir.to_path_buf(),
            real: std::fs::canonicalize(dir).ok(),
        }
    }

    fn holds(&self, folder: &Path) -> bool {
        folder == self.given
            || self.real.as_deref().is_some_and(|real| {
                folder == real
                    || (cfg!(target_os = "macos")
                        && folder
                            .to_string_lossy()
                            .eq_ignore_ascii_case(&real.to_string_lossy()))
            })
    }
}

/// The file name of `path` if it sits directly in the watched folder.
fn name_in(root: &Roots, path: &Path) -> Option<String> {
    if !root.holds(path.parent()?) {
        return None;
    }
    Some(path.file_name()?.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_a_written_file_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(SIGNALS_MAX);
        let _watch = watch(dir.path(), WatchMode::Native, tx).unwrap();
        std::fs::write(dir.path().join("a.json"), "{}").unwrap();
        let signal = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a signal within 10 s")
            .unwrap();
        assert_eq!(signal, WatchSignal::Changed(["a.json".to_string()].into()));
    }

    #[tokio::test]
    async fn reading_a_file_is_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), "{}").unwrap();
        let (tx, mut rx) = mpsc::channel(SIGNALS_MAX);
        let _watch = watch(dir.path(), WatchMode::Native, tx).unwrap();
        for _ in 0..3 {
            std::fs::read_to_string(dir.path().join("a.json")).unwrap();
        }
        // A write afterwards is the first thing reported.
        std::fs::write(dir.path().join("b.json"), "{}").unwrap();
        let signal = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a signal within 10 s")
            .unwrap();
        assert_eq!(
            signal,
            WatchSignal::Changed(["b.json".to_string()].into()),
            "reads of a.json were reported as changes"
        );
    }

    #[test]
    fn events_reported_by_the_real_path_still_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real-devices");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("devices-link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let roots = Roots::of(&link);
        // As FSEvents reports it: through the resolved folder, not the link baton got.
        let reported = std::fs::canonicalize(&real).unwrap().join("a.json");
        assert_eq!(name_in(&roots, &reported).as_deref(), Some("a.json"));
        assert_eq!(
            name_in(&roots, &link.join("b.json")).as_deref(),
            Some("b.json")
        );
        assert_eq!(name_in(&roots, &dir.path().join("elsewhere.json")), None);
    }
}
