//! Fixture replay: one device's inputs over time as JSON Lines, replayed through the
//! sans-IO core into a transcript of what it decided.
//!
//! Owns: the fixture format ([`fixture`]), the replayer ([`engine`]: a model of the
//! folder, auto-answers, a step bound) and the transcript formats ([`transcript`]).
//! `fixtures/README.md` is the manual. `baton record`, which watches a real folder, is
//! IO and lives in the binary (`mirror_baton::replay`).
//!
//! Must never: let anything but the fixture decide a replay (no clock, no OS randomness,
//! no file but the fixture), or panic on a malformed fixture (errors name the line).

pub mod engine;
pub mod fixture;
pub mod transcript;

pub use engine::{Entry, Item, Replay, replay};
pub use fixture::{Auto, FIXTURE_LINES_MAX, Fixture, FixtureError, Header, Step, TimingSpec};
pub use transcript::{render_json, render_text};
