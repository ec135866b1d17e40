//! The demo's stand-in for iCloud Drive: every Mac has its own replica of the synced
//! folder (devices on one Mac share it), and a syncer thread copies each device's own files — its record
//! (`devices/<own>`) and its mailbox (`mail/<own>`, issue 11) — from its owner's replica
//! to the other Macs' replicas after a random delay.
//!
//! Behaves like the real medium where baton depends on it (FACTS.md): one writer per
//! file; a copy lands atomically (written to a `.tmp` name, which baton ignores, then
//! renamed over the record); copies between two replicas arrive in the order they were
//! made (per file: a record and a mailbox travel independently, as two iCloud files
//! do); delays are heavy-tailed — a Pareto draw ("real" seconds, like iCloud's typical
//! few seconds with a long tail) times the time scale, capped below the protocol's settle
//! bound, the one-way delay under which baton promises a single active device.
//!
//! Owns: the replicas' record and mailbox files of other devices, and the log of what it
//! saw and copied. Must never: write a device's file into that device's own replica, or
//! copy anything but those two files per device.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;

use crate::adapters::clock;
use crate::core::record::{self, DeviceRecord};

/// Smallest "real" delay of one copy (the Pareto scale), in seconds.
pub const DELAY_MIN_S: f64 = 2.0;
/// Pareto shape: 2 gives a median of ~2.8 s and a tail past 6 s one copy in ten.
pub const DELAY_SHAPE: f64 = 2.0;
/// How often the owners' files are looked at.
const LOOK_INTERVAL: Duration = Duration::from_millis(10);
/// Copies in flight at most; a demo makes a few hundred in all.
const IN_FLIGHT_MAX: usize = 10_000;

/// One device's replica: the devices and mail folders it reads (the same as another
/// device's when both live on one Mac), and the name of the one file it owns in each.
#[derive(Debug, Clone)]
pub struct Replica {
    pub devices_dir: PathBuf,
    pub mail_dir: PathBuf,
    /// `record::file_name(device_id)` of the device living on this replica (its record
    /// and its mailbox share the name).
    pub own_file: String,
}

/// The two files a device owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Record,
    Mailbox,
}

const FILE_KINDS: [FileKind; 2] = [FileKind::Record, FileKind::Mailbox];

impl Replica {
    fn dir(&self, kind: FileKind) -> &PathBuf {
        match kind {
            FileKind::Record => &self.devices_dir,
            FileKind::Mailbox => &self.mail_dir,
        }
    }
}

/// A new version of a device's record, as its owner wrote it.
#[derive(Debug, Clone)]
pub struct RecordSeen {
    pub device: usize,
    /// Wall clock when the syncer read it (≤ one look interval after the write).
    pub seen_ms: u64,
    pub record: DeviceRecord,
}

/// One copy landed in another replica.
#[derive(Debug, Clone)]
pub struct CopyLanded {
    pub kind: FileKind,
    pub from: usize,
    pub to: usize,
    pub landed_ms: u64,
    pub delay: Duration,
    /// The record copied (parsed again only for the timeline); `None` for a mailbox.
    pub record: Option<DeviceRecord>,
}

/// What happened since the last [`Syncer::drain`].
#[derive(Debug, Default)]
pub struct SyncNews {
    pub seen: Vec<RecordSeen>,
    pub landed: Vec<CopyLanded>,
    pub errors: Vec<String>,
}

struct InFlight {
    kind: FileKind,
    due: Instant,
    from: usize,
    to: usize,
    delay: Duration,
    bytes: Arc<Vec<u8>>,
}

/// The running syncer thread. Dropping it stops the thread.
pub struct Syncer {
    stop: Arc<AtomicBool>,
    news: Arc<Mutex<SyncNews>>,
    thread: Option<JoinHandle<()>>,
}

/// Draws one copy's delay: Pareto("real" seconds) × `time_scale`, at most `cap`.
pub fn draw_delay(rng: &mut impl rand::Rng, time_scale: f64, cap: Duration) -> Duration {
    let uniform: f64 = rng.random_range(f64::EPSILON..1.0);
    let real_s = DELAY_MIN_S / uniform.powf(1.0 / DELAY_SHAPE);
    Duration::from_secs_f64((real_s * time_scale).min(cap.as_secs_f64()))
}

impl Syncer {
    /// Starts copying between `replicas`; delays come from `seed`.
    pub fn start(replicas: Vec<Replica>, seed: u64, time_scale: f64, cap: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let news = Arc::new(Mutex::new(SyncNews::default()));
        let worker = Worker {
            last: vec![[None, None]; replicas.len()],
            last_due: vec![vec![[None, None]; replicas.len()]; replicas.len()],
            home: replicas
                .iter()
                .map(|r| {
                    replicas
                        .iter()
                        .position(|other| other.devices_dir == r.devices_dir)
                        .unwrap_or_default()
                })
                .collect(),
            replicas,
            rng: crate::core::seed::rng(seed, "sync"),
            time_scale,
            cap,
            in_flight: Vec::new(),
            news: news.clone(),
        };
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("demo-syncer".into())
            .spawn(move || worker.run(&stop_flag))
            .ok();
        if thread.is_none() {
            lock(&news)
                .errors
                .push("cannot start the syncer thread: nothing will sync".into());
        }
        Syncer { stop, news, thread }
    }

    /// Takes what happened since the last call.
    pub fn drain(&self) -> SyncNews {
        std::mem::take(&mut *lock(&self.news))
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(news: &Mutex<SyncNews>) -> MutexGuard<'_, SyncNews> {
    // A poisoned lock only means the other side panicked mid-push; the log stays usable.
    news.lock().unwrap_or_else(|p| p.into_inner())
}

struct Worker {
    replicas: Vec<Replica>,
    /// Per device: the first device living on the same replica (its Mac's), which
    /// stands for that replica as a copy's destination.
    home: Vec<usize>,
    /// The last bytes seen in each owner's files, per [`FileKind`] (index as in
    /// `FILE_KINDS`).
    last: Vec<[Option<Arc<Vec<u8>>>; 2]>,
    /// Per (from, to, kind): when the last copy is due, so copies of one file never
    /// overtake each other.
    last_due: Vec<Vec<[Option<Instant>; 2]>>,
    rng: ChaCha8Rng,
    time_scale: f64,
    cap: Duration,
    in_flight: Vec<InFlight>,
    news: Arc<Mutex<SyncNews>>,
}

impl Worker {
    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            for device in 0..self.replicas.len() {
                for (slot, kind) in FILE_KINDS.iter().enumerate() {
                    self.look(device, *kind, slot);
                }
            }
            self.deliver_due();
            std::thread::sleep(LOOK_INTERVAL);
        }
    }

    /// Reads the owner's file of `kind`; a new version is logged (a record) and sent to
    /// every other replica.
    fn look(&mut self, device: usize, kind: FileKind, slot: usize) {
        let replica = &self.replicas[device];
        let Ok(bytes) = std::fs::read(replica.dir(kind).join(&replica.own_file)) else {
            return; // not written yet
        };
        if self.last[device][slot].as_deref() == Some(&bytes) {
            return;
        }
        let bytes = Arc::new(bytes);
        self.last[device][slot] = Some(bytes.clone());
        let now = Instant::now();
        if kind == FileKind::Record {
            match record::parse_record(&bytes) {
                Ok(record) => lock(&self.news).seen.push(RecordSeen {
                    device,
                    seen_ms: clock::wall_ms(),
                    record,
                }),
                Err(error) => lock(&self.news).errors.push(format!(
                    "device {device} wrote an unparseable record: {error}"
                )),
            }
        }
        let own_home = self.home[device];
        let destinations: Vec<usize> = (0..self.replicas.len())
            .filter(|to| self.home[*to] == *to && *to != own_home)
            .collect();
        for to in destinations {
            let delay = draw_delay(&mut self.rng, self.time_scale, self.cap);
            let last_due = &mut self.last_due[device][to][slot];
            let due = last_due.map_or(now + delay, |last| last.max(now + delay));
            *last_due = Some(due);
            if self.in_flight.len() >= IN_FLIGHT_MAX {
                lock(&self.news)
                    .errors
                    .push("too many copies in flight: one was dropped".into());
                continue;
            }
            self.in_flight.push(InFlight {
                kind,
                due,
                from: device,
                to,
                delay: due.saturating_duration_since(now),
                bytes: bytes.clone(),
            });
        }
    }

    fn deliver_due(&mut self) {
        let now = Instant::now();
        let (due, waiting): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|copy| copy.due <= now);
        self.in_flight = waiting;
        let mut due = due;
        due.sort_by_key(|copy| copy.due);
        for copy in due {
            let name = &self.replicas[copy.from].own_file;
            let dir = self.replicas[copy.to].dir(copy.kind);
            let temp = dir.join(format!(".{name}.demo-sync.tmp"));
            let written = std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&temp, copy.bytes.as_slice()))
                .and_then(|()| std::fs::rename(&temp, dir.join(name)));
            let record = match copy.kind {
                FileKind::Record => record::parse_record(&copy.bytes).ok(),
                FileKind::Mailbox => None,
            };
            let mut news = lock(&self.news);
            match written {
                Ok(()) => news.landed.push(CopyLanded {
                    kind: copy.kind,
                    from: copy.from,
                    to: copy.to,
                    landed_ms: clock::wall_ms(),
                    delay: copy.delay,
                    record,
                }),
                Err(error) => news.errors.push(format!(
                    "cannot copy {name} into {}: {error}",
                    dir.display()
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_heavy_tailed_scaled_and_capped() {
        let mut rng = crate::core::seed::rng(7, "sync");
        let cap = Duration::from_millis(375);
        let mut delays: Vec<Duration> = (0..10_000)
            .map(|_| draw_delay(&mut rng, 0.05, cap))
            .collect();
        delays.sort();
        let median = delays[delays.len() / 2];
        assert!(delays[0] >= Duration::from_millis(100), "{:?}", delays[0]);
        assert!(
            (Duration::from_millis(125)..Duration::from_millis(160)).contains(&median),
            "{median:?}"
        );
        assert_eq!(*delays.last().unwrap(), cap, "the tail reaches the cap");
    }
}
