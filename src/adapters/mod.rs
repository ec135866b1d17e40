//! Adapters: IO on one side, the core's inputs and effects on the other.

pub mod clock;
pub mod control;
pub mod local;
pub mod store;
pub mod watcher;
