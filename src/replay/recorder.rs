//! `baton record`: captures what a real devices folder does — notify events and file
//! contents — as a fixture, so a real iCloud sequence can be replayed and contributed.
//!
//! Owns: one recursive notify watch on `<sync-dir>/<group>/devices` (created once, then
//! one scan right after watching, as FACTS.md advises), a bounded event channel whose
//! overflow becomes a full rescan.
//! Must never: write into the watched folder, follow a symlink, read more than 64 KiB of
//! a file, or block on an evicted (dataless) file.
//!
//! Files are read by the store adapter (`adapters/store.rs`), exactly as the runtime
//! reads them: bounded, never following a symlink, dataless files not read.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::adapters::store::{self, Store};
use crate::core::{Event, FileObservation, Identity, Input, Moment};

use baton_sim::replay::{Auto, FIXTURE_LINES_MAX, Fixture, FixtureError, Header, Step, TimingSpec};

/// Errors of `baton replay` and `baton record`.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    #[error("cannot write the transcript: {0}")]
    Output(#[source] std::io::Error),
    #[error(
        "{path} is not a folder: point --sync-dir and --group at a group whose devices \
         folder exists (baton run creates it)"
    )]
    NoFolder { path: PathBuf },
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("cannot write the recording to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--duration must be a positive number of seconds, not {0}")]
    BadDuration(f64),
}

/// Notify events buffered between the watcher thread and the recorder, at most. When
/// full, further events are dropped and the next look is a full rescan (nothing is lost
/// but the exact sequence).
const EVENT_QUEUE_MAX: usize = 1024;

/// How often the recorder looks at the stop flag and the duration.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What to record and as whom.
#[derive(Clone, Debug)]
pub struct RecordPlan {
    pub sync_dir: PathBuf,
    pub group: String,
    /// `<sync-dir>/<group>/devices`.
    pub devices_dir: PathBuf,
    pub out: PathBuf,
    pub duration: Option<Duration>,
    /// The device id the replay will pretend to be.
    pub observer: String,
    pub seed: u64,
}

/// What a recording captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSummary {
    pub lines: usize,
    pub duration_ms: u64,
    pub dropped_events: bool,
}

/// The identity of the imaginary new device a recording is replayed as.
pub fn observer_identity(name: &str) -> Identity {
    Identity {
        device_id: format!("{name}@recorder:/replay"),
        hostname: "recorder".into(),
        project_dir: "/replay".into(),
        pid: 0,
        instance: format!("{name}-instance"),
        install_id: format!("{name}-install"),
        boot_id: String::new(),
        priority: 0,
        thread_id: None,
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

fn wall_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Lists and reads the whole folder the way the runtime does (the store adapter).
fn list_folder(plan: &RecordPlan) -> Result<Vec<FileObservation>, String> {
    Store::new(&plan.sync_dir, &plan.group, &plan.observer)
        .scan()
        .map_err(|error| error.to_string())
}

/// What the watcher thread hands over.
enum Notice {
    Changed(PathBuf),
    Rescan,
}

struct Recording<'plan> {
    plan: &'plan RecordPlan,
    started: Instant,
    devices_dir: PathBuf,
    steps: Vec<Step>,
}

impl Recording<'_> {
    fn at(&self) -> (Moment, u64) {
        (
            Moment(self.started.elapsed().as_millis() as u64),
            wall_now_ms(),
        )
    }

    fn push(&mut self, event: Event) {
        let (at, wall_ms) = self.at();
        self.steps.push(Step::Input(Input { at, wall_ms, event }));
    }

    fn scan(&mut self) {
        match list_folder(self.plan) {
            Ok(files) => self.push(Event::Scanned { files }),
            Err(reason) => self.push(Event::ScanFailed { reason }),
        }
    }

    /// Follows the notices until `stop`, the plan's duration or the line bound; returns
    /// whether any notice overflowed the queue (each overflow became a full rescan).
    fn follow(
        &mut self,
        stop: &AtomicBool,
        receiver: &mpsc::Receiver<Notice>,
        dropped: &AtomicBool,
    ) -> bool {
        let mut dropped_any = false;
        loop {
            if stop.load(Ordering::SeqCst)
                || self
                    .plan
                    .duration
                    .is_some_and(|limit| self.started.elapsed() >= limit)
                || self.steps.len() >= FIXTURE_LINES_MAX
            {
                return dropped_any;
            }
            if dropped.swap(false, Ordering::SeqCst) {
                dropped_any = true;
                self.scan();
            }
            match receiver.recv_timeout(POLL_INTERVAL) {
                Ok(Notice::Changed(path)) => self.changed(&path),
                Ok(Notice::Rescan) => self.scan(),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return dropped_any,
            }
        }
    }

    fn changed(&mut self, path: &Path) {
        if path == self.devices_dir {
            self.scan();
            return;
        }
        if path.parent() != Some(self.devices_dir.as_path()) {
            return;
        }
        let Some(name) = path.file_name() else {
            return;
        };
        let file = store::observe_path(path, name.to_string_lossy().into_owned());
        self.push(Event::FileChanged { file });
    }
}

/// Records until `stop` is set or the plan's duration has passed; writes the fixture.
pub fn record(plan: &RecordPlan, stop: &AtomicBool) -> Result<RecordSummary, ReplayError> {
    let devices_dir = plan.devices_dir.clone();
    if !devices_dir.is_dir() {
        return Err(ReplayError::NoFolder { path: devices_dir });
    }
    let (sender, receiver) = mpsc::sync_channel::<Notice>(EVENT_QUEUE_MAX);
    let dropped = Arc::new(AtomicBool::new(false));
    let mut watcher =
        notice_watcher(sender, Arc::clone(&dropped)).map_err(|source| ReplayError::Watch {
            path: devices_dir.clone(),
            source,
        })?;
    let mut recording = Recording {
        plan,
        started: Instant::now(),
        devices_dir: devices_dir.clone(),
        steps: Vec::new(),
    };
    watcher
        .watch(&devices_dir, RecursiveMode::Recursive)
        .map_err(|source| ReplayError::Watch {
            path: devices_dir.clone(),
            source,
        })?;
    // The folder as it was when the imaginary device started; then its start.
    if let Ok(files) = list_folder(plan) {
        for file in files {
            recording.steps.push(Step::Folder {
                at: Moment(0),
                file,
            });
        }
    }
    recording.push(Event::Start);
    let dropped_any = recording.follow(stop, &receiver, &dropped);
    drop(watcher);
    write_fixture(recording, dropped_any)
}

/// A notify watcher that turns events into [`Notice`]s on a bounded channel; when the
/// channel is full it drops the notice and flags `dropped` (the recorder rescans).
fn notice_watcher(
    sender: mpsc::SyncSender<Notice>,
    dropped: Arc<AtomicBool>,
) -> notify::Result<notify::RecommendedWatcher> {
    notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let notices: Vec<Notice> = match result {
            Ok(event) if event.need_rescan() => vec![Notice::Rescan],
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => Vec::new(),
            Ok(event) => event.paths.into_iter().map(Notice::Changed).collect(),
            Err(_) => vec![Notice::Rescan],
        };
        for notice in notices {
            if let Err(TrySendError::Full(_)) = sender.try_send(notice) {
                dropped.store(true, Ordering::SeqCst);
            }
        }
    })
}

/// Writes the recording as a fixture to the plan's `out`.
fn write_fixture(recording: Recording, dropped_any: bool) -> Result<RecordSummary, ReplayError> {
    let plan = recording.plan;
    let duration_ms = recording.started.elapsed().as_millis() as u64;
    let fixture = Fixture {
        header: Header {
            description: format!(
                "recorded from {} as a new device {:?} would have seen it",
                recording.devices_dir.display(),
                plan.observer
            ),
            seed: plan.seed,
            identity: observer_identity(&plan.observer),
            timing: TimingSpec::Default,
            auto: Auto::default(),
            end_ms: Some(duration_ms),
        },
        steps: recording.steps,
    };
    fs::write(&plan.out, fixture.to_text()).map_err(|source| ReplayError::Write {
        path: plan.out.clone(),
        source,
    })?;
    Ok(RecordSummary {
        lines: fixture.steps.len() + 1,
        duration_ms,
        dropped_events: dropped_any,
    })
}
