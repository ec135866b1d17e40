//! mirror-baton: passes one Telegram bot between several devices over a synced folder.
//!
//! (The full manual lands with the runtime; see ARCHITECTURE.md meanwhile.)

pub mod adapters;
pub mod agent;
pub mod cli;
pub mod cli_ops;
pub mod core;
pub mod demo;
pub mod fake_bot_api;
pub mod mirror_stub;
pub mod replay;
pub mod runtime;
pub mod serving;
pub mod telegram_text;
