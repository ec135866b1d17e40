//! `baton-core`: the sans-IO coordination core — who is active, decided from files alone.
//!
//! Owns: the device record format ([`record`]), the election rules ([`election`]), who
//! serves which topic ([`routing`]) and the mailbox rules ([`mailbox`]), time
//! and timers ([`timers`]), the inputs and effects ([`io`]), the shared context
//! ([`context`]), the state machine split by state ([`machine`]), what an announced
//! sleep means ([`sleep`]), the Telegram offset bookkeeping ([`offsets`]), Telegram as a
//! second witness of the leader's liveness ([`witness`]) and the per-component rng
//! streams of the one seed ([`seed`]). Around persistence it asserts (`BUG:` panics, our
//! own invariants only): before a write, seq up by exactly one, under the size cap,
//! reading back as itself; after a read, what `record::sanitize` promises. Must never: read a
//! clock, a file or OS randomness, spawn a task, or touch tokio, notify or teloxide. Time
//! and a seed come in; effects go out. That is what makes fixture replay, simulation and
//! model checking possible. The crate's dependencies are the first guard: it cannot name
//! what it does not depend on (`tests/core_dependencies.rs` holds its tree to serde,
//! rand, statig and thiserror); `tests/core_purity.rs` scans its sources for the
//! standard library's clocks, files, environment, processes, network and threads, and
//! for OS randomness.

pub mod context;
pub mod election;
pub mod io;
pub mod machine;
pub mod mailbox;
pub mod offsets;
pub mod record;
pub mod routing;
pub mod seed;
pub mod sleep;
pub mod timers;
pub mod witness;
mod witness_cut_off;
mod witnessing;

pub use context::CoreConfig;
pub use io::{ActivationOutcome, Effect, Event, FileObservation, FileState, Input, Level, Role};
pub use machine::Core;
pub use record::{DeviceRecord, Identity, Status};
pub use timers::{Moment, Timeout, TimerId, Timing};
