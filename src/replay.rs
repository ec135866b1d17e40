//! `baton replay` and `baton record`: their flags and entry points, and the recorder.
//!
//! Owns: the clap arguments ([`ReplayArgs`], [`RecordArgs`]), the entry points
//! ([`run_replay`], [`run_record`]) and `baton record` itself ([`recorder`], which
//! watches a real folder: IO, so it lives here, not in the simulator crate). The pure
//! replay engine — fixture format, replayer, transcripts — is `baton_sim::replay`,
//! re-exported here. `fixtures/README.md` is the manual.
//!
//! Must never: let anything but the fixture decide a replay, or write into a folder it
//! records.

pub mod recorder;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use baton_sim::replay::{
    Auto, Entry, Fixture, FixtureError, Header, Item, Replay, Step, TimingSpec, render_json,
    render_text, replay,
};
pub use recorder::{RecordPlan, RecordSummary, ReplayError, record};

/// `baton replay FIXTURE [--json]`.
#[derive(clap::Args, Clone, Debug)]
pub struct ReplayArgs {
    /// The fixture to replay: a JSON Lines file as described in fixtures/README.md
    /// (e.g. one written by `baton record`).
    pub fixture: PathBuf,
    /// Print the transcript as JSON Lines (one effect per line, then an end summary)
    /// instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `baton record --out FILE [--duration S] [--as NAME]`; the folder comes from the global
/// `--sync-dir` and `--group` (resolved by the CLI and passed to [`run_record`]).
#[derive(clap::Args, Clone, Debug)]
pub struct RecordArgs {
    /// Where to write the fixture (JSON Lines).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Stop after this many seconds (default: on Ctrl-C).
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// The name of the imaginary new device the recording is replayed as: the replay
    /// shows what a device named NAME would have done had it started with the recording.
    #[arg(long = "as", value_name = "NAME", default_value = "observer")]
    pub observer: String,
    /// The rng seed written into the fixture's header.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Replays `args.fixture` and writes its transcript to `out`. Returns the exit code for
/// the process: 0 when the replay ran (whatever the replayed device decided).
pub fn run_replay(args: &ReplayArgs, out: &mut dyn Write) -> Result<i32, ReplayError> {
    let fixture = Fixture::load(&args.fixture)?;
    let result = replay(&fixture);
    let text = if args.json {
        render_json(&result)
    } else {
        render_text(&fixture.header, &result)
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(ReplayError::Output)?;
    Ok(0)
}

/// Set by SIGINT while `baton record` runs.
static STOP_RECORDING: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_interrupt(_signal: libc::c_int) {
    STOP_RECORDING.store(true, Ordering::SeqCst);
}

impl RecordArgs {
    /// The validated plan for recording `<sync_dir>/<group>/devices`.
    pub fn plan(&self, sync_dir: &Path, group: &str) -> Result<RecordPlan, ReplayError> {
        let duration = match self.duration {
            None => None,
            Some(seconds) if seconds.is_finite() && seconds > 0.0 => {
                Some(Duration::from_secs_f64(seconds))
            }
            Some(seconds) => return Err(ReplayError::BadDuration(seconds)),
        };
        Ok(RecordPlan {
            sync_dir: sync_dir.to_path_buf(),
            group: group.to_string(),
            devices_dir: crate::adapters::store::devices_dir(sync_dir, group),
            out: self.out.clone(),
            duration,
            observer: self.observer.clone(),
            seed: self.seed,
        })
    }
}

/// Records `<sync_dir>/<group>/devices` until Ctrl-C or `--duration`, then writes the
/// fixture and reports on stderr. Blocks the calling thread (use `spawn_blocking` or call
/// it before starting a runtime). Installs a SIGINT handler that only sets a flag.
pub fn run_record(args: &RecordArgs, sync_dir: &Path, group: &str) -> Result<i32, ReplayError> {
    let plan = args.plan(sync_dir, group)?;
    STOP_RECORDING.store(false, Ordering::SeqCst);
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let handler: extern "C" fn(libc::c_int) = on_interrupt;
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
    eprintln!(
        "recording {} into {} ({}); make changes in the folder now",
        plan.devices_dir.display(),
        plan.out.display(),
        match plan.duration {
            Some(limit) => format!("for {limit:?}"),
            None => "until Ctrl-C".into(),
        }
    );
    let summary = record(&plan, &STOP_RECORDING)?;
    eprintln!(
        "wrote {} lines covering {} ms{}; replay it with `baton replay {}`",
        summary.lines,
        summary.duration_ms,
        if summary.dropped_events {
            " (some notifications overflowed the queue and became rescans)"
        } else {
            ""
        },
        plan.out.display()
    );
    Ok(0)
}
