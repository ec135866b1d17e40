//! The words baton says in Telegram: `/devices`, `/status`, `/help` and activation
//! answers, as Telegram HTML.
//!
//! Owns: wording and layout. Must never: put an unescaped foreign value (device ids hold
//! `_`, `*`, `<`) into markup, or mention the token.

use std::time::Duration;

use crate::adapters::telegram_commands::escape_html;
use crate::core::election::{DeviceRow, Health};
use crate::core::{ActivationOutcome, Role};

/// `/devices`: the numbered table, active first; ⚠ on stale devices.
pub fn devices(rows: &[DeviceRow]) -> String {
    devices_with(rows, None)
}

/// `/devices` with routing (issue 11): each device's topic (or the whole chat) and the
/// mail waiting for it; mail for topics nobody serves under its own line.
pub fn devices_routed(
    rows: &[DeviceRow],
    queued: &std::collections::BTreeMap<String, usize>,
) -> String {
    let mut text = devices_with(rows, Some(queued));
    if let Some(unserved) = queued.get("").filter(|n| **n > 0) {
        text.push_str(&format!(
            "\n📭 {unserved} message(s) wait for a topic no device serves"
        ));
    }
    text
}

fn devices_with(
    rows: &[DeviceRow],
    queued: Option<&std::collections::BTreeMap<String, usize>>,
) -> String {
    if rows.is_empty() {
        return "no devices yet".into();
    }
    let mut text = String::from("<b>Devices</b>\n");
    for row in rows {
        let mark = match row.health {
            Health::Ok if row.role == crate::core::Status::Active => "🟢",
            Health::Ok => "⚪",
            Health::Stale => "⚠",
            Health::Stopped => "⏹",
            Health::Unknown => "❔",
        };
        let thread = match (row.thread_id, queued) {
            (Some(t), _) => format!(" · topic {t}"),
            (None, Some(_)) => " · whole chat".into(),
            (None, None) => String::new(),
        };
        let waiting = queued
            .and_then(|q| q.get(&row.device_id))
            .filter(|n| **n > 0)
            .map(|n| format!(" · 📬 {n} queued"))
            .unwrap_or_default();
        let problem = row
            .problem
            .as_deref()
            .map(|p| format!(" · ⚠ {}", escape_html(p)))
            .unwrap_or_default();
        text.push_str(&format!(
            "{} {mark} <code>{}</code> — {}{thread} · term {} · seen {} ago{waiting}{problem}\n",
            row.number,
            escape_html(&row.device_id),
            row.role.as_str(),
            row.term,
            age(Duration::from_secs(row.heartbeat_age_s)),
        ));
    }
    text.push_str("\n/activate &lt;n&gt; makes a device active");
    text
}

/// What routing tells a topic (issue 11): where to send it, and the words.
pub fn routing_notice(
    notice: &crate::adapters::telegram::RoutingNotice,
) -> (i64, Option<i64>, String) {
    use crate::adapters::telegram::RoutingNotice;
    match notice {
        RoutingNotice::Unserved { chat_id, thread_id } => (
            *chat_id,
            *thread_id,
            "⚠ no project serves this topic: start <code>baton run --thread-id …</code> for it. \
             Messages here are kept for a day and delivered when one does."
                .into(),
        ),
        RoutingNotice::OwnerOffline {
            chat_id,
            thread_id,
            device_id,
        } => (
            *chat_id,
            *thread_id,
            format!(
                "⏸ <code>{}</code>, which serves this topic, is offline: your messages wait and are delivered when it is back.",
                escape_html(device_id)
            ),
        ),
        RoutingNotice::NotQueued {
            chat_id,
            thread_id,
            device_id,
            reason,
        } => (
            *chat_id,
            *thread_id,
            format!(
                "⚠ this message could not be passed on to {}: {}. It was not delivered; send it again later.",
                device_id
                    .as_deref()
                    .map(|d| format!("<code>{}</code>", escape_html(d)))
                    .unwrap_or_else(|| "a device".into()),
                escape_html(reason)
            ),
        ),
    }
}

fn age(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

/// What `/status` shows.
pub struct StatusInfo<'a> {
    pub device_id: &'a str,
    pub role: Role,
    pub term: u64,
    pub uptime: Duration,
    pub folder: &'a str,
    pub peers: usize,
}

pub fn status(info: &StatusInfo<'_>) -> String {
    format!(
        "<b>{}</b>\nrole: {} · term {}\nup {} · baton {}\nsync folder: <code>{}</code> ({} peers seen)",
        escape_html(info.device_id),
        info.role,
        info.term,
        age(info.uptime),
        env!("CARGO_PKG_VERSION"),
        escape_html(info.folder),
        info.peers,
    )
}

pub fn help() -> String {
    "<b>baton</b> passes this bot between your devices.\n\
     /devices — the devices, active first\n\
     /activate &lt;n|device&gt; — make a device active\n\
     /status — this device, its role and health\n\
     Everything else goes to the mirror on the active device."
        .into()
}

/// Said by a device taking the role about a peer whose bot token Telegram refused.
pub fn peer_cannot_poll(device: &str, reason: &str) -> String {
    format!(
        "⚠ <code>{}</code> cannot serve this bot: Telegram refused its bot token ({}). \
         Fix its token and restart baton there.",
        escape_html(device),
        escape_html(reason)
    )
}

/// `/activate` caught by a device that is exiting.
pub fn activate_while_stopping() -> String {
    "⚠ this device is stopping and could not carry out /activate; send it again in a moment"
        .to_string()
}

pub fn activate_usage() -> String {
    "usage: <code>/activate &lt;n|device&gt;</code> — see /devices for the numbers".into()
}

/// The answer to `/activate`.
pub fn activation(result: &ActivationOutcome) -> String {
    match result {
        ActivationOutcome::HandingOver { to } => {
            format!("handing over to <code>{}</code> …", escape_html(to))
        }
        ActivationOutcome::Requested { to, .. } => {
            format!("asked for <code>{}</code> …", escape_html(to))
        }
        ActivationOutcome::Contending => "claiming the role …".into(),
        ActivationOutcome::Done { device } => {
            format!("✅ <code>{}</code> is now ACTIVE", escape_html(device))
        }
        ActivationOutcome::AlreadyActive { device } => {
            format!("<code>{}</code> is already active", escape_html(device))
        }
        ActivationOutcome::Failed { reason } => format!("❌ {}", escape_html(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Status;

    fn row(number: usize, device_id: &str, thread_id: Option<i64>) -> DeviceRow {
        DeviceRow {
            number,
            device_id: device_id.into(),
            hostname: "h".into(),
            role: Status::Standby,
            term: 1,
            thread_id,
            priority: 0,
            heartbeat_age_s: 3,
            written_at_ms: 0,
            health: Health::Ok,
            this_device: false,
            problem: None,
        }
    }

    #[test]
    fn devices_with_routing_show_topics_and_queued_mail() {
        let rows = [row(1, "h:/api", Some(10)), row(2, "h:/all", None)];
        let queued =
            std::collections::BTreeMap::from([("h:/api".to_string(), 3), (String::new(), 2)]);
        let text = devices_routed(&rows, &queued);
        assert!(
            text.contains("topic 10 · term 1 · seen 3s ago · 📬 3 queued"),
            "{text}"
        );
        assert!(
            text.contains("<code>h:/all</code> — standby · whole chat"),
            "{text}"
        );
        assert!(
            text.contains("2 message(s) wait for a topic no device serves"),
            "{text}"
        );
        // Without routing, the table is as before.
        assert!(!devices(&rows).contains("whole chat"));
    }
}
