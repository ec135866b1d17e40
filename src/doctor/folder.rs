//! The sync folder: it exists, this device can write it, which sync tool keeps it (and,
//! for Syncthing, how fast), its records are downloaded, and file events arrive.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::check::{Check, Setup, Verdict};
use super::os::OsProbes;
use crate::adapters::store;
use crate::adapters::watcher::{self, WatchMode, WatchSignal};
use crate::core::record::{self, NameKind};

/// Which sync tool keeps the folder in step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderKind {
    ICloud,
    Dropbox {
        root: PathBuf,
    },
    /// `root` holds Syncthing's `.stfolder` marker.
    Syncthing {
        root: PathBuf,
    },
    Local,
}

pub async fn checks(setup: &Setup, os: &dyn OsProbes) -> Vec<Check> {
    let sync_dir = &setup.sync_dir;
    let mut checks = vec![sync_folder(setup)];
    if checks[0].verdict == Verdict::Fail {
        for id in ["writable", "folder_kind", "records_local", "file_events"] {
            checks.push(Check::new(id, Verdict::Skip, "needs the sync folder"));
        }
        return checks;
    }
    let probe_dir = [
        setup.devices_dir(),
        sync_dir.join(&setup.group),
        sync_dir.clone(),
    ]
    .into_iter()
    .find(|dir| dir.is_dir())
    .unwrap_or_else(|| sync_dir.clone());
    let writable = writable(&probe_dir);
    let can_write = writable.verdict == Verdict::Pass;
    checks.push(writable);
    checks.push(folder_kind(setup));
    checks.push(records_local(setup, os));
    checks.push(if can_write {
        file_events(&probe_dir, setup.events_timeout).await
    } else {
        Check::new("file_events", Verdict::Skip, "needs a writable folder")
    });
    checks
}

fn sync_folder(setup: &Setup) -> Check {
    let dir = &setup.sync_dir;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Check::new(
            "sync_folder",
            Verdict::Pass,
            format!("{} exists", dir.display()),
        ),
        Ok(_) => Check::new(
            "sync_folder",
            Verdict::Fail,
            format!("{} is not a folder", dir.display()),
        )
        .fix("pass the folder your sync tool keeps in step with --sync-dir (or BATON_SYNC_DIR)"),
        Err(error) => {
            let fix = if is_icloud_path(dir, setup.home.as_deref()) {
                "turn on iCloud Drive (System Settings → your name → iCloud → iCloud Drive), \
                 then `mkdir -p` the folder; or pass another folder with --sync-dir"
                    .to_string()
            } else {
                format!(
                    "create it (`mkdir -p {}`) inside the folder your sync tool keeps in step, \
                     or pass that folder with --sync-dir (or BATON_SYNC_DIR)",
                    dir.display()
                )
            };
            Check::new(
                "sync_folder",
                Verdict::Fail,
                format!("{} cannot be used: {error}", dir.display()),
            )
            .fix(fix)
        }
    }
}

/// The probe file's name: a temp name no sync tool syncs and no baton reads.
fn probe_name() -> String {
    store::temp_name(&format!("baton-doctor-{}", std::process::id()))
}

fn writable(dir: &Path) -> Check {
    let path = dir.join(probe_name());
    let result = std::fs::write(&path, b"baton doctor probe")
        .and_then(|()| std::fs::File::open(&path)?.sync_all())
        .and_then(|()| std::fs::remove_file(&path));
    match result {
        Ok(()) => Check::new(
            "writable",
            Verdict::Pass,
            format!("{} is writable", dir.display()),
        ),
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            Check::new(
                "writable",
                Verdict::Fail,
                format!("cannot write in {}: {error}", dir.display()),
            )
            .fix(
                "until it can write its record, a device neither contends nor serves: fix the \
                 folder's permissions (`ls -ld` it), free disk space, or remount it read-write",
            )
        }
    }
}

fn is_icloud_path(path: &Path, home: Option<&Path>) -> bool {
    let text = path.to_string_lossy();
    home.is_some_and(|home| path.starts_with(home.join("Library/Mobile Documents")))
        || text.contains("/Library/Mobile Documents/")
        || text.contains("/Library/CloudStorage/iCloud")
}

/// Which sync tool keeps `path` in step: iCloud by its path, Dropbox and Syncthing by
/// the markers they keep at their folder's root.
pub fn detect_kind(path: &Path, home: Option<&Path>) -> FolderKind {
    if is_icloud_path(path, home) {
        return FolderKind::ICloud;
    }
    for ancestor in path.ancestors() {
        if ancestor.join(".stfolder").exists() {
            return FolderKind::Syncthing {
                root: ancestor.to_path_buf(),
            };
        }
        let dropbox_marker = ancestor.join(".dropbox").exists()
            || ancestor.join(".dropbox.cache").exists()
            || ancestor
                .to_string_lossy()
                .contains("/Library/CloudStorage/Dropbox");
        if dropbox_marker {
            return FolderKind::Dropbox {
                root: ancestor.to_path_buf(),
            };
        }
    }
    FolderKind::Local
}

fn folder_kind(setup: &Setup) -> Check {
    let home = setup.home.as_deref();
    match detect_kind(&setup.sync_dir, home) {
        FolderKind::ICloud => {
            Check::new("folder_kind", Verdict::Pass, "on iCloud Drive").details(vec![
                "iCloud usually delivers a record in 5–30 s; the protocol's settle bound is 8 s, \
                 so a slow day can briefly give two active devices (they settle on the records)"
                    .into(),
            ])
        }
        FolderKind::Dropbox { root } => Check::new(
            "folder_kind",
            Verdict::Pass,
            format!("in a Dropbox folder ({})", root.display()),
        ),
        FolderKind::Syncthing { root } => syncthing_check(&root, home),
        FolderKind::Local => Check::new(
            "folder_kind",
            Verdict::Warn,
            "on a local disk: no iCloud Drive, Dropbox or Syncthing folder around it",
        )
        .fix(
            "fine for several projects on this machine; for several machines, pass a synced \
             folder with --sync-dir",
        ),
    }
}

/// Syncthing's watcher batches changes for `fsWatcherDelayS` (10 s by default), beyond
/// the protocol's 8 s settle bound: read it from Syncthing's own configuration.
fn syncthing_check(root: &Path, home: Option<&Path>) -> Check {
    let summary = format!("in a Syncthing folder ({})", root.display());
    let fix = "set the folder's fsWatcherDelayS to 1 (Syncthing → folder → Edit → Advanced → \
               Watch for Changes delay): with the default 10 s, three devices starting together \
               can serve at once until their records meet (see README, Syncthing)";
    match syncthing_watcher_delay(root, home) {
        Some((true, delay_s)) if delay_s <= 2 => Check::new(
            "folder_kind",
            Verdict::Pass,
            format!("{summary}, watcher delay {delay_s} s"),
        ),
        Some((enabled, delay_s)) => Check::new(
            "folder_kind",
            Verdict::Warn,
            if enabled {
                format!(
                    "{summary}, watcher delay {delay_s} s: above the 8 s settle bound's comfort"
                )
            } else {
                format!("{summary}, with its file watcher off: changes wait for rescans")
            },
        )
        .fix(fix),
        None => Check::new(
            "folder_kind",
            Verdict::Warn,
            format!("{summary}; its configuration was not found to read the watcher delay"),
        )
        .fix(fix),
    }
}

/// (fsWatcherEnabled, fsWatcherDelayS) of the Syncthing folder at `root`, from the
/// user's Syncthing configuration, when it can be found.
fn syncthing_watcher_delay(root: &Path, home: Option<&Path>) -> Option<(bool, u64)> {
    let home = home?;
    let candidates = [
        home.join(".local/state/syncthing/config.xml"),
        home.join(".config/syncthing/config.xml"),
        home.join("Library/Application Support/Syncthing/config.xml"),
    ];
    let root_text = root.to_string_lossy().trim_end_matches('/').to_string();
    candidates.iter().find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        text.split("<folder ").skip(1).find_map(|folder| {
            let tag = folder.split('>').next()?;
            let attribute = |name: &str| {
                let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
                let rest = &tag[start..];
                Some(rest[..rest.find('"')?].to_string())
            };
            let folder_path = attribute("path")?;
            let expanded = folder_path.replacen('~', &home.to_string_lossy(), 1);
            (expanded.trim_end_matches('/') == root_text).then(|| {
                let enabled = attribute("fsWatcherEnabled").is_none_or(|v| v == "true");
                let delay = attribute("fsWatcherDelayS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(10);
                (enabled, delay)
            })
        })
    })
}

fn records_local(setup: &Setup, os: &dyn OsProbes) -> Check {
    let dir = setup.devices_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Check::new(
            "records_local",
            Verdict::Skip,
            format!(
                "no devices folder yet ({}): `baton run` makes it",
                dir.display()
            ),
        );
    };
    let (mut records, mut evicted, mut conflicts) = (0, Vec::new(), Vec::new());
    for entry in entries.flatten().take(100_000) {
        let name = entry.file_name().to_string_lossy().into_owned();
        match record::classify_name(&name) {
            NameKind::Record { .. } if os.is_dataless(&entry.path()) => evicted.push(name),
            NameKind::Record { .. } => records += 1,
            NameKind::IcloudStub { .. } => evicted.push(name),
            NameKind::ConflictCopy { .. } => conflicts.push(name),
            NameKind::Temp | NameKind::Foreign => {}
        }
    }
    let pin = "pin the folder: in Finder, right-click it → Keep Downloaded (or turn off \
               Optimise Mac Storage); baton asks iCloud for evicted records, but reading one \
               waits for the download";
    if !evicted.is_empty() {
        let mut details: Vec<String> = evicted.iter().map(|n| format!("evicted: {n}")).collect();
        details.extend(conflicts.iter().map(|n| format!("conflict copy: {n}")));
        return Check::new(
            "records_local",
            Verdict::Fail,
            format!(
                "{} record(s) evicted (not downloaded), {records} downloaded",
                evicted.len()
            ),
        )
        .fix(pin)
        .details(details)
        .odd();
    }
    let mut check = Check::new(
        "records_local",
        Verdict::Pass,
        format!("{records} record(s), all downloaded"),
    );
    if is_icloud_path(&setup.sync_dir, setup.home.as_deref()) {
        check = check.fix(format!(
            "doctor cannot see whether the folder is pinned: {pin}"
        ));
    }
    if !conflicts.is_empty() {
        check = Check::new(
            "records_local",
            Verdict::Warn,
            format!("{records} record(s) downloaded; {} conflict copies", conflicts.len()),
        )
        .details(conflicts.iter().map(|n| format!("conflict copy: {n}")).collect())
        .fix("two writers touched one record: each device deletes its own copies; a copy that stays names a device that is not running")
        .odd();
    }
    check
}

/// Writes the probe file and waits for baton's own watcher to report it.
async fn file_events(dir: &Path, timeout: Duration) -> Check {
    let (tx, mut rx) = tokio::sync::mpsc::channel(watcher::SIGNALS_MAX);
    let watch = match watcher::watch(dir, WatchMode::Native, tx) {
        Ok(watch) => watch,
        Err(error) => {
            return Check::new("file_events", Verdict::Fail, format!("cannot watch {}: {error}", dir.display()))
                .fix("baton then relies on its backstop scans (every 2–3 min); on a network or FUSE mount use `baton run --poll`")
                .odd();
        }
    };
    // `watch()` can return before the OS registered the stream (FSEvents).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let name = probe_name();
    let path = dir.join(&name);
    let written = Instant::now();
    if let Err(error) = std::fs::write(&path, b"baton doctor event probe") {
        return Check::new(
            "file_events",
            Verdict::Fail,
            format!("cannot write the probe: {error}"),
        );
    }
    let arrived = tokio::time::timeout(timeout, async {
        while let Some(signal) = rx.recv().await {
            match signal {
                WatchSignal::Changed(names) if names.contains(&name) => return true,
                WatchSignal::Rescan { .. } => return true,
                _ => {}
            }
        }
        false
    })
    .await;
    let delay = written.elapsed();
    let _ = std::fs::remove_file(&path);
    drop(watch);
    events_verdict(arrived.unwrap_or(false), delay, timeout)
}

fn events_verdict(arrived: bool, delay: Duration, timeout: Duration) -> Check {
    let ms = delay.as_millis();
    if !arrived {
        return Check::new(
            "file_events",
            Verdict::Fail,
            format!("no file event within {:.0} s of writing a probe file", timeout.as_secs_f64()),
        )
        .fix("without events, baton sees peers only at its backstop scans (every 2–3 min): on a network or FUSE mount run `baton run --poll`")
        .odd();
    }
    if delay > Duration::from_secs(2) {
        return Check::new(
            "file_events",
            Verdict::Warn,
            format!("the probe file's event arrived after {ms} ms (expected well under a second)"),
        )
        .fix("a busy or slow file-event service delays every change baton sees")
        .odd();
    }
    Check::new(
        "file_events",
        Verdict::Pass,
        format!("the probe file's event arrived after {ms} ms"),
    )
}
