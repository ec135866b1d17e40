//! IO <-> core: each adapter turns one outside thing into the program's own events.

pub mod child;
pub mod gateway;
pub mod telegram;
pub mod telegram_commands;
pub mod telegram_config;
pub mod update_route;
