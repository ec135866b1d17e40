//! mirror-baton: passes one Telegram bot between several devices over a synced folder.
//!
//! (The full manual lands with the runtime; see ARCHITECTURE.md meanwhile.)

pub mod agent;
pub mod core;
pub mod replay;
