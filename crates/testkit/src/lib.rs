//! `baton-testkit`: what baton is tested against — a faithful fake of the Telegram Bot
//! API over loopback ([`fake_bot_api`]) and a stand-in for the opencode-telegram-mirror
//! ([`mirror_stub`]).
//!
//! Owns: reproducing Telegram's and the mirror's behaviour wherever baton depends on it
//! (FACTS.md), and recording what they saw for the tests to check. The test suite uses it
//! as a dev-dependency; `baton demo` and the hidden `baton fake-telegram` /
//! `baton mirror-stub` commands (which the demo and the end-to-end tests run) reach it
//! through the product's default `demo` feature.
//!
//! Must never: depend on any crate of ours (a fake that shares the product's code would
//! agree with whatever the product does), listen beyond loopback by default, or record a
//! token.

pub mod fake_bot_api;
pub mod mirror_stub;
