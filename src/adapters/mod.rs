//! Adapters: IO on one side, the program's own events on the other. Each turns one
//! outside thing (files, the watcher, clocks, Telegram, the child, the control socket,
//! the OS's sleep announcements) into inputs for the core or carries out its effects.

pub mod child;
pub mod child_env;
pub mod child_output;
pub mod clock;
pub mod control;
pub mod gateway;
pub mod local;
pub mod mailbox;
pub mod power;
pub mod store;
pub mod telegram;
pub mod telegram_commands;
pub mod telegram_config;
pub mod update_route;
pub mod watcher;
