//! Keeping the chat's command menu whole while the mirror restarts.
//!
//! The mirror replaces the bot's default command list at every start; baton keeps its
//! own list for the configured chat (a chat's list wins over the default there), made
//! of the mirror's commands and baton's ([`TelegramBot::assert_command_menu`]). That list
//! survives any mirror start on any device; what goes stale is the copy of the mirror's
//! commands in it, when a mirror of another version starts. So after each start of its
//! child, on any device and in any role, baton looks at the default list a few times
//! (the mirror sets it once it is up, which takes a while: it starts OpenCode first) and
//! writes the chat's list when it no longer matches.
//!
//! Owns: that schedule ([`CHECKS_AFTER_START`], restarted by every child start) and
//! nothing else. Must never: poll for updates (these are plain menu calls, allowed on a
//! standby device), or stop the run for a menu Telegram refuses.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::adapters::child::ChildState;
use crate::adapters::telegram::{MenuOutcome, TelegramBot};

/// When, after a start of the child, the menu is checked (from the start).
pub const CHECKS_AFTER_START: &[Duration] = &[
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(20),
    Duration::from_secs(40),
    Duration::from_secs(80),
];

/// Runs until `stop`: after every start of the child, checks the menu on the schedule.
pub async fn keep_menu(
    bot: TelegramBot,
    chat_id: i64,
    mut child: watch::Receiver<ChildState>,
    stop: CancellationToken,
) {
    let mut seen_starts = 0;
    loop {
        let next_start = async {
            child
                .wait_for(|state| state.starts != seen_starts)
                .await
                .map(|state| state.starts)
        };
        let starts = tokio::select! {
            started = next_start => match started {
                Ok(starts) => starts,
                Err(_) => return, // the supervisor is gone
            },
            () = stop.cancelled() => return,
        };
        seen_starts = starts;
        // A newer start ends this schedule and begins its own on the next turn.
        let newer_start = child.wait_for(|state| state.starts != seen_starts);
        tokio::select! {
            () = check_after_start(&bot, chat_id) => {}
            _ = newer_start => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn check_after_start(bot: &TelegramBot, chat_id: i64) {
    let started = tokio::time::Instant::now();
    let mut reported = false;
    for after in CHECKS_AFTER_START {
        tokio::time::sleep_until(started + *after).await;
        match bot.assert_command_menu(chat_id).await {
            Ok(MenuOutcome::Unchanged) => {}
            Ok(MenuOutcome::Set { mirror_commands }) => tracing::info!(
                mirror_commands,
                "the chat's command menu now holds the mirror's commands and baton's"
            ),
            Err(error) if !reported => {
                reported = true;
                tracing::warn!(%error, "cannot check the bot's command menu after the child started; baton's commands still work when typed");
            }
            Err(_) => {}
        }
    }
}
