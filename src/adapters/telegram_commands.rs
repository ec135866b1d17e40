//! baton's own chat commands: recognising them in a message text, and escaping replies.
//!
//! Owns: the command grammar (`/devices` alias `/dev`, `/activate <n|device>` alias `/use`,
//! `/status`, `/help`, each optionally suffixed `@<botname>`); which of them the mirror
//! gets too (`/help`: baton answers with its own commands and the mirror, which may have
//! a `/help` of its own, gets the message as it would without baton); the menu baton
//! registers, merged with the mirror's ([`merged_menu`]); and HTML escaping for
//! Telegram's HTML parse mode.
//!
//! `/devices`, `/dev`, `/activate`, `/use` and `/status` are baton's alone: `/dev` and
//! `/use` are the seed design's names for the first two, which the utensil fork of the
//! mirror also answers from its own iCloud election (disabled under baton).
//!
//! Must never: decide what a command does (the runtime and core do), or do IO.

/// A command baton answers itself; everything else goes to the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatonCommand {
    Devices,
    Activate { target: Option<ActivateTarget> },
    Status,
    Help,
}

/// Which device `/activate` names: a row number of `/devices` or a device id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivateTarget {
    Number(u32),
    Device(String),
}

impl BatonCommand {
    /// True when the update also goes to the mirror (`/help`): a command the mirror may
    /// handle itself must not be shadowed by baton.
    pub fn also_for_mirror(&self) -> bool {
        matches!(self, BatonCommand::Help)
    }
}

/// baton's entries of the menu (names 1–32 `[a-z0-9_]`, descriptions 3–256 chars).
pub const COMMAND_MENU: &[(&str, &str)] = &[
    ("devices", "List the devices, active first"),
    ("activate", "Make a device active: /activate <n|device>"),
    ("status", "This device, its role and health"),
    ("help", "Help: baton's commands (the mirror answers too)"),
];

/// Telegram takes at most this many commands in one list.
pub const MENU_COMMANDS_MAX: usize = 100;

/// The chat's menu: the mirror's commands (as it set them, in its order) without those
/// baton lists itself, then baton's. Bounded by [`MENU_COMMANDS_MAX`]: when the mirror
/// has too many, its last ones are left out, never baton's.
pub fn merged_menu(mirror: &[(String, String)]) -> Vec<(String, String)> {
    let room = MENU_COMMANDS_MAX.saturating_sub(COMMAND_MENU.len());
    let mut menu: Vec<(String, String)> = mirror
        .iter()
        .filter(|(name, _)| !COMMAND_MENU.iter().any(|(ours, _)| ours == name))
        .take(room)
        .cloned()
        .collect();
    menu.extend(
        COMMAND_MENU
            .iter()
            .map(|(name, description)| (name.to_string(), description.to_string())),
    );
    menu
}

/// Recognises a baton command at the start of `text`.
///
/// `bot_username` is the bot's own username (without `@`): `/devices@other_bot` is for
/// another bot and is not ours. Names compare case-insensitively.
pub fn parse_command(text: &str, bot_username: &str) -> Option<BatonCommand> {
    let text = text.trim_start();
    let rest = text.strip_prefix('/')?;
    let (head, arguments) = match rest.find(char::is_whitespace) {
        Some(split) => (&rest[..split], rest[split..].trim()),
        None => (rest, ""),
    };
    let name = match head.split_once('@') {
        Some((name, addressee)) if addressee.eq_ignore_ascii_case(bot_username) => name,
        Some(_) => return None,
        None => head,
    };
    match name.to_ascii_lowercase().as_str() {
        "devices" | "dev" => Some(BatonCommand::Devices),
        "activate" | "use" => Some(BatonCommand::Activate {
            target: parse_target(arguments),
        }),
        "status" => Some(BatonCommand::Status),
        "help" => Some(BatonCommand::Help),
        _ => None,
    }
}

fn parse_target(arguments: &str) -> Option<ActivateTarget> {
    let first = arguments.split_whitespace().next()?;
    match first.parse::<u32>() {
        Ok(number) => Some(ActivateTarget::Number(number)),
        Err(_) => Some(ActivateTarget::Device(first.to_owned())),
    }
}

/// Escapes `text` for Telegram's HTML parse mode (`&`, `<`, `>`, `"`).
///
/// Use on every value that is not markup baton wrote itself: device ids, paths, errors.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_aliases_and_addressee() {
        let bot = "baton_bot";
        assert_eq!(parse_command("/devices", bot), Some(BatonCommand::Devices));
        assert_eq!(
            parse_command("/DEV@Baton_Bot", bot),
            Some(BatonCommand::Devices)
        );
        assert_eq!(parse_command("/dev@other_bot", bot), None);
        assert_eq!(
            parse_command("/use 2", bot),
            Some(BatonCommand::Activate {
                target: Some(ActivateTarget::Number(2))
            })
        );
        assert_eq!(
            parse_command("/activate@baton_bot  mac_<mini>*", bot),
            Some(BatonCommand::Activate {
                target: Some(ActivateTarget::Device("mac_<mini>*".into()))
            })
        );
        assert_eq!(
            parse_command("/activate", bot),
            Some(BatonCommand::Activate { target: None })
        );
        assert_eq!(parse_command("/interrupt", bot), None);
        assert_eq!(parse_command("hello /status", bot), None);
        assert_eq!(parse_command("/", bot), None);
    }

    #[test]
    fn menu_is_valid_for_set_my_commands() {
        for (name, description) in COMMAND_MENU {
            assert!((1..=32).contains(&name.len()));
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
            assert!((3..=256).contains(&description.chars().count()));
        }
    }

    #[test]
    fn the_merged_menu_keeps_the_mirrors_commands_first_and_every_one_of_batons() {
        let own = |name: &str| (name.to_string(), format!("the mirror's {name}"));
        let mirror = vec![own("interrupt"), own("help"), own("plan")];
        let names: Vec<String> = merged_menu(&mirror).into_iter().map(|c| c.0).collect();
        assert_eq!(
            names,
            ["interrupt", "plan", "devices", "activate", "status", "help"]
        );
        let crowded: Vec<(String, String)> = (0..150).map(|n| own(&format!("c{n}"))).collect();
        let menu = merged_menu(&crowded);
        assert_eq!(menu.len(), MENU_COMMANDS_MAX);
        assert_eq!(menu[MENU_COMMANDS_MAX - 1].0, "help");
        assert!(BatonCommand::Help.also_for_mirror());
        assert!(!BatonCommand::Status.also_for_mirror());
    }

    #[test]
    fn escapes_device_ids() {
        assert_eq!(escape_html("a_<b>*&\"c"), "a_&lt;b&gt;*&amp;&quot;c");
    }
}
