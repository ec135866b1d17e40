//! mirror-baton: one Telegram bot, passed between several devices over a synced folder.
//!
//! A *device* is one `baton run` for one project directory on one machine. Telegram
//! allows one `getUpdates` consumer per bot, so exactly one device, the **active
//! device**, polls it at a time. It answers baton's own chat commands and hands every
//! other update to a child program (the opencode-telegram-mirror) through a loopback
//! gateway. The devices share nothing but a folder that iCloud Drive (or Dropbox,
//! Syncthing, or a local disk) keeps in sync. Each device writes only its own record in
//! `<sync-root>/<group>/devices/` and decides who is active from everyone's records.
//!
//! This is the programmer's manual. `ARCHITECTURE.md` (at the repository root) is the
//! codemap: the crates and modules, how the layers are held, and the invariants with
//! the tests that check them. `docs/PROTOCOL.md` is the protocol in prose: its rules,
//! its safety argument and its limits. `README.md` is the user's manual.
//!
//! # The crates
//!
//! The workspace's crate graph is the architecture; arrows point down only:
//!
//! - `baton-core` (`crates/core`, re-exported here as [`core`]): the sans-IO core. Its
//!   dependencies are serde, rand (without OS entropy), statig and thiserror, so it
//!   cannot name tokio, notify, teloxide, an HTTP client or libc.
//! - `baton-sim` (`crates/sim`): the core driven with no IO — the multi-device
//!   simulator, the stateright model check, and fixture replay ([`replay`] re-exports
//!   its engine). It depends on the core alone.
//! - `baton-testkit` (`crates/testkit`): the fake Bot API and the stand-in mirror the
//!   tests and `baton demo` run against. It depends on nothing of ours; this crate
//!   reaches it only through the default `demo` feature.
//! - `mirror-baton` (this crate, and the `baton` binary): everything that does IO for
//!   the core.
//!
//! # The run loop
//!
//! The protocol lives in a sans-IO core, [`core::Core`], driven the way str0m and
//! quinn-proto are driven. The core never reads a clock, a file or OS randomness. Time
//! arrives as an argument; decisions leave as effects.
//!
//! 1. Build it with [`Core::new`](crate::core::Core::new) from a
//!    [`CoreConfig`](crate::core::CoreConfig): identity, [`Timing`](crate::core::Timing)
//!    and a seed. Every jitter is drawn from an rng seeded with it (other components
//!    derive their own streams from it: [`core::seed`]).
//! 2. Feed [`Event::Start`](crate::core::Event::Start) first, then every input as it
//!    happens, with [`Core::handle`](crate::core::Core::handle) and an
//!    [`Input`](crate::core::Input) `{ at, wall_ms, event }`. Timers due at or before
//!    `at` fire before the event is handled. A [`Woke`](crate::core::Event::Woke) input
//!    is acted on even before those timers.
//! 3. After each `handle`, drain [`Core::poll_effect`](crate::core::Core::poll_effect)
//!    until it returns `None`, and carry the [`Effect`](crate::core::Effect)s out in
//!    order. Three of them owe the core an answer, to be fed as a later input:
//!    - [`Effect::Rescan`](crate::core::Effect::Rescan) →
//!      [`Event::Scanned`](crate::core::Event::Scanned) (or `ScanFailed`);
//!    - [`Effect::StopActing`](crate::core::Effect::StopActing) →
//!      [`Event::ActingStopped`](crate::core::Event::ActingStopped), once polling has
//!      really stopped (a handoff is published only then);
//!    - [`Effect::ProbePid`](crate::core::Effect::ProbePid) →
//!      [`Event::PidProbed`](crate::core::Event::PidProbed).
//! 4. Sleep until [`Core::next_timeout`](crate::core::Core::next_timeout) (its deadline
//!    and the [`TimerId`](crate::core::TimerId) that falls due then), or until
//!    something happens. On waking for a deadline, feed
//!    [`Event::Tick`](crate::core::Event::Tick), which only advances time.
//!
//! [`runtime`] is the tokio implementation of this loop for `baton run`.
//! [`replay`] drives the same core from recorded fixtures, with no IO at all. Because the
//! core is deterministic, one fixture (inputs plus seed) always gives the same
//! transcript.
//!
//! # Kinds of time
//!
//! - [`Moment`](crate::core::Moment): milliseconds on a monotonic clock that **counts
//!   sleep**. That is `CLOCK_BOOTTIME` on Linux and `CLOCK_MONOTONIC_RAW`
//!   (`mach_continuous_time`) on macOS. Leases, liveness, timers and settle windows are
//!   all measured in Moments, so a closed lid does not freeze a lease.
//!   [`adapters::clock`] is the only reader of this clock. It adds a fixed origin
//!   offset, so that peers can always be marked long dead without underflow.
//! - The awake-only clock (`CLOCK_MONOTONIC` on Linux, `CLOCK_UPTIME_RAW` on macOS,
//!   which is what `Instant` and tokio's timers use there). Its only protocol use is to
//!   notice a sleep: the two clocks drifting apart becomes
//!   [`Event::Woke`](crate::core::Event::Woke).
//! - The wall clock ([`Input::wall_ms`](crate::core::Input::wall_ms)), stamped into
//!   records as `written_at_ms`. It is never compared across machines except as a
//!   start-up hint and in the retention sweep, both with a 2 h skew allowance.
//!   Liveness is always judged by the LOCAL moment at which a peer's `seq` was *seen to
//!   change*.
//!
//! `--time-scale F` multiplies every protocol constant in
//! [`Timing`](crate::core::Timing) (tests and demos use 0.01–0.1). It does not scale
//! the skew allowance or the record retention.
//!
//! # Panic policy
//!
//! Bad input and IO trouble never panic. A corrupt record, an evicted iCloud file, a
//! vanished folder, a malformed Telegram update or a refused write is logged (once per
//! file and problem) and survived. A panic means a broken invariant, and its message
//! starts with `"BUG: "`. The core's re-evaluation bound (at most 8 transitions per
//! input) reports a `BUG:` notice instead of panicking or hanging. Errors are
//! `thiserror` enums per module; `anyhow` is used only at the top (`main.rs`, the
//! demo's set-up, and [`cli::simulate`]). The bot token never reaches a log, a record, an error or a
//! panic.
//!
//! # Modules
//!
//! From the bottom up:
//!
//! - [`exit`] — the one table of exit codes; [`config`] — the configuration types the
//!   command line parses into (below the runtime).
//! - [`core`] — the sans-IO coordination core (the `baton-core` crate).
//!   - [`core::record`] — the device record, file names and number bounds.
//!   - [`core::election`] — pure election rules.
//!   - [`core::timers`] — time, constants, timers.
//!   - [`core::io`] — inputs and effects.
//!   - [`core::machine`] — the statig machine, one file per state, and the [`Core`](crate::core::Core) facade.
//!   - [`core::offsets`] — Telegram update ids: the offset ledger and start hints.
//!   - [`core::seed`] — every component's rng stream, derived from the one seed.
//! - [`adapters`] — IO on one side, core inputs and effects on the other.
//!   - [`adapters::store`] — the devices folder.
//!   - [`adapters::watcher`] — notify.
//!   - [`adapters::clock`] — clocks and sleep detection.
//!   - [`adapters::local`] — the local state directory, lock and pid probe.
//!   - [`adapters::control`] — the local control socket.
//!   - [`adapters::telegram`] — the bot client, the poller and the replier.
//!   - [`adapters::gateway`] — the loopback gateway the child reads.
//!   - [`adapters::child`] — the child supervisor.
//!   - [`adapters::child_env`] — what the child's environment gets from baton.
//!   - [`adapters::child_output`] — the child's output, scrubbed, into baton's log.
//!   - [`adapters::telegram_config`] — configuration and the token `Secret`.
//! - [`serving`] — what acting as the active device means (poller, gateway, child).
//! - [`runtime`] — the tokio run loop of `baton run`.
//! - [`telegram_text`] — the words baton says in the chat.
//! - [`child_guard`] — `baton child-guard`, which stops the child's group when baton dies.
//! - [`cli`] — the command line: flags, parsing into [`config`], `status`, `activate`,
//!   `simulate`.
//! - [`agent`] — launchd and systemd services, and the `baton agent` verbs.
//! - [`replay`] — `baton replay` and `baton record` (the engine is `baton_sim::replay`).
//! - `demo` (feature `demo`) — the failover and handoff story on one machine.

pub mod adapters;
pub mod agent;
pub mod child_guard;
pub mod cli;
pub mod config;
/// The sans-IO core lives in its own crate (`crates/core`, `baton-core`), which cannot
/// name tokio, notify, teloxide or the filesystem; it is re-exported here so the
/// product's modules say `crate::core::…`.
pub use baton_core as core;
#[cfg(feature = "demo")]
pub mod demo;
pub mod doctor;
pub mod exit;
pub mod replay;
pub mod runtime;
pub mod serving;
pub mod telegram_text;
