//! The fake Bot API behaves like Telegram where baton depends on it.

mod common;

use baton_testkit::fake_bot_api::{CONFLICT_OTHER_GET_UPDATES, FakeBotApi};
use serde_json::{Value, json};
use teloxide::prelude::Requester as _;

async fn call(fake: &FakeBotApi, method: &str, body: Value) -> (u16, Value) {
    let url = format!("{}bot{}/{method}", fake.api_url(), fake.token());
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("fake answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

fn ids(result: &Value) -> Vec<i64> {
    result["result"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|u| u["update_id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test]
async fn offsets_confirm_and_limit_and_negative_offsets_trim() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let first = fake.inject_text(common::CHAT_ID, None, "a");
    for text in ["b", "c", "d", "e"] {
        fake.inject_text(common::CHAT_ID, None, text);
    }
    let (_, all) = call(&fake, "GetUpdates", json!({"limit": 2})).await;
    assert_eq!(
        ids(&all),
        vec![first, first + 1],
        "limit 2, nothing confirmed yet"
    );
    let (_, again) = call(&fake, "getupdates", json!({})).await;
    assert_eq!(
        ids(&again).len(),
        5,
        "a call without offset confirms nothing"
    );
    let (_, rest) = call(&fake, "getUpdates", json!({"offset": first + 2})).await;
    assert_eq!(ids(&rest), vec![first + 2, first + 3, first + 4]);
    assert_eq!(
        fake.pending_update_ids(),
        vec![first + 2, first + 3, first + 4]
    );
    let (_, last) = call(&fake, "getUpdates", json!({"offset": -1})).await;
    assert_eq!(
        ids(&last),
        vec![first + 4],
        "offset -1 keeps only the last update"
    );
    assert_eq!(fake.pending_update_ids(), vec![first + 4]);
}

#[tokio::test]
async fn long_poll_returns_when_an_update_arrives_and_older_poll_gets_409() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let older = tokio::spawn({
        let url = format!("{}bot{}/getUpdates", fake.api_url(), fake.token());
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(&json!({"timeout": 30}))
                .send()
                .await
                .expect("answers");
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("JSON"),
            )
        }
    });
    fake.wait_for(common::PATIENCE, |f| {
        (f.get_updates_requests().len() == 1).then_some(())
    })
    .await
    .expect("the older poll arrives");
    let newer = tokio::spawn({
        let url = format!("{}bot{}/GetUpdates", fake.api_url(), fake.token());
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(&json!({"timeout": 30}))
                .send()
                .await
                .expect("answers");
            response.json::<Value>().await.expect("JSON")
        }
    });
    let (status, body) = older.await.expect("older poll task");
    assert_eq!(status, 409);
    assert_eq!(body["description"], CONFLICT_OTHER_GET_UPDATES);
    assert_eq!(body["error_code"], 409);
    let id = fake.inject_text(common::CHAT_ID, None, "wake up");
    let body = newer.await.expect("newer poll task");
    assert_eq!(
        ids(&body),
        vec![id],
        "the waiting newer poll gets the update"
    );
}

#[tokio::test]
async fn wrong_token_is_401_and_the_log_never_holds_a_token() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let url = format!("{}bot999:wrong/getMe", fake.api_url());
    let response = reqwest::Client::new()
        .post(url)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 401);
    let (status, me) = call(&fake, "GETME", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(me["result"]["username"], "baton_test_bot");
    let log = serde_json::to_string(&fake.requests()).expect("log serialises");
    assert!(
        !log.contains(fake.token()) && !log.contains("999:wrong"),
        "{log}"
    );
    assert!(!fake.requests()[0].token_ok);
}

#[tokio::test]
async fn set_my_commands_validates_names_and_descriptions() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    for bad in [
        json!([{"command": "Devices", "description": "upper case name"}]),
        json!([{"command": "", "description": "empty name"}]),
        json!([{"command": "a".repeat(33), "description": "too long"}]),
        json!([{"command": "ok", "description": "no"}]),
    ] {
        let (status, _) = call(&fake, "setMyCommands", json!({"commands": bad})).await;
        assert_eq!(status, 400, "{bad}");
    }
    let good = json!([{"command": "devices_2", "description": "fine"}]);
    let (status, _) = call(&fake, "setMyCommands", json!({"commands": good})).await;
    assert_eq!(status, 200);
    assert_eq!(fake.commands(), Some(good));
}

#[tokio::test]
async fn form_bodies_and_query_strings_are_parameters_too() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let url = format!(
        "{}bot{}/sendMessage?chat_id=42",
        fake.api_url(),
        fake.token()
    );
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("text=hello%20there&message_thread_id=7")
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let sent = fake.sent_messages();
    assert_eq!(
        (
            sent[0].chat_id,
            sent[0].message_thread_id,
            sent[0].text.as_str()
        ),
        (42, Some(7), "hello there")
    );
}

#[tokio::test]
async fn real_teloxide_understands_the_fake() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let bot = teloxide::Bot::new(fake.token())
        .set_api_url(reqwest::Url::parse(&fake.api_url()).expect("url"));
    let me = bot.get_me().await.expect("getMe parses");
    assert_eq!(me.username(), "baton_test_bot");
    let message = bot
        .send_message(teloxide::types::ChatId(common::CHAT_ID), "hi")
        .await
        .expect("sendMessage parses");
    assert_eq!(message.text(), Some("hi"));
    fake.inject_text(common::CHAT_ID, Some(5), "/devices@baton_test_bot");
    let updates = bot.get_updates().await.expect("getUpdates parses");
    assert_eq!(updates.len(), 1);
}

/// A self-hosted Bot API behind a proxy lives under a path: baton's own getUpdates and
/// teloxide's calls (getMe, deleteWebhook, setMyCommands) must all go under it, whether the
/// configured base ends with a slash or not. A call outside the prefix gets 404 `Not
/// Found`, which baton reads as a refused token and stops polling.
#[tokio::test]
async fn every_call_goes_under_the_api_urls_path_prefix() {
    use baton_testkit::fake_bot_api::FakeBotConfig;
    use mirror_baton::adapters::telegram::{
        BotSettings, PollerEvent, StartPosition, TelegramBot, spawn_poller,
    };
    use mirror_baton::adapters::telegram_config::Secret;
    use std::time::Duration;

    let fake = FakeBotApi::start_with(FakeBotConfig {
        path_prefix: "/tg".into(),
        ..FakeBotConfig::default()
    })
    .await
    .expect("fake starts");
    assert!(fake.api_url().ends_with("/tg/"), "{}", fake.api_url());
    let with_slash = fake.api_url();
    let without_slash = with_slash.trim_end_matches('/').to_owned();
    for base in [with_slash, without_slash] {
        let settings = BotSettings {
            poll_timeout: Duration::from_secs(5),
            api_url: Some(reqwest::Url::parse(&base).expect("URL")),
            device_tag: Some("a".into()),
        };
        let bot = TelegramBot::new(&Secret::new(fake.token()), &settings).expect("client");
        let (_acknowledged_tx, acknowledged) =
            tokio::sync::watch::channel(mirror_baton::adapters::gateway::Acknowledged::default());
        let (events_tx, mut events) = tokio::sync::mpsc::channel(16);
        let poller = spawn_poller(
            bot,
            common::fast_poller_config(None),
            StartPosition::default(),
            acknowledged,
            events_tx,
        );
        let id = fake.inject_text(common::CHAT_ID, None, &format!("via {base}"));
        loop {
            let event = tokio::time::timeout(common::PATIENCE, events.recv())
                .await
                .expect("an event in time")
                .expect("the poller runs");
            match event {
                PollerEvent::Started { bot_username } => {
                    assert_eq!(bot_username, "baton_test_bot", "getMe under {base}")
                }
                PollerEvent::Forward { update_id, .. } if update_id == id => break,
                other => panic!("with base {base}: unexpected {other:?}"),
            }
        }
        poller.stop().await;
        // Confirm it, so the next round starts clean.
        let (status, _) = call(&fake, "getUpdates", json!({"offset": id + 1})).await;
        assert_eq!(status, 200);
    }
    let answered: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.device.as_deref() == Some("a") && r.status == Some(200))
        .map(|r| r.method.to_ascii_lowercase())
        .collect();
    for method in ["getme", "deletewebhook", "setmycommands", "getupdates"] {
        assert!(
            answered.iter().any(|m| m == method),
            "{method}: {answered:?}"
        );
    }
}

/// Menus live per scope, `getMyCommands` answers exactly the asked scope, and a member
/// of a chat sees the chat's own list before the default one, as on Telegram.
#[tokio::test]
async fn command_menus_are_kept_per_scope_and_the_chat_list_wins_in_its_chat() {
    use baton_testkit::fake_bot_api::menus::Scope;
    let fake = FakeBotApi::start().await.expect("fake starts");
    let chat = json!({"type": "chat", "chat_id": common::CHAT_ID});
    let mirror = json!([{"command": "interrupt", "description": "stop it"}]);
    let both = json!([
        {"command": "interrupt", "description": "stop it"},
        {"command": "devices", "description": "list devices"}
    ]);
    let (status, _) = call(&fake, "setMyCommands", json!({"commands": mirror})).await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &fake,
        "setMyCommands",
        json!({"commands": both, "scope": chat}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, default) = call(&fake, "getMyCommands", json!({})).await;
    assert_eq!(default["result"], mirror, "the default scope alone");
    let (_, in_chat) = call(&fake, "getMyCommands", json!({"scope": chat})).await;
    assert_eq!(in_chat["result"], both);
    let (_, groups) = call(
        &fake,
        "getMyCommands",
        json!({"scope": {"type": "all_group_chats"}}),
    )
    .await;
    assert_eq!(groups["result"], json!([]), "no fallback between scopes");
    assert_eq!(fake.menu_seen_in(common::CHAT_ID), both);
    assert_eq!(
        fake.menu_seen_in(-42),
        mirror,
        "other chats see the default"
    );

    // The mirror replaces the default list: the chat's own list is untouched.
    let other = json!([{"command": "plan", "description": "plan mode"}]);
    call(&fake, "setMyCommands", json!({"commands": other})).await;
    assert_eq!(fake.menu_seen_in(common::CHAT_ID), both);
    let (status, _) = call(&fake, "deleteMyCommands", json!({"scope": chat})).await;
    assert_eq!(status, 200);
    assert_eq!(fake.commands_in(Scope::Chat(common::CHAT_ID)), None);
    assert_eq!(fake.menu_seen_in(common::CHAT_ID), other);
    let (status, _) = call(
        &fake,
        "setMyCommands",
        json!({"commands": other, "scope": {"type": "moon"}}),
    )
    .await;
    assert_eq!(status, 400, "an unknown scope type is refused");
}

/// The real server after a week without updates (FACTS.md): the next id is chosen at
/// random, lower, and a getUpdates with the old, higher offset keeps returning the new
/// update — it confirms nothing — until an offset above the new id is sent.
#[tokio::test]
async fn after_a_quiet_week_ids_restart_lower_and_an_old_offset_confirms_nothing() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    let old = fake.inject_text(common::CHAT_ID, None, "before the holiday");
    let old_offset = old + 1;
    let (_, answer) = call(&fake, "getUpdates", json!({"offset": old_offset})).await;
    assert!(ids(&answer).is_empty(), "the old update is confirmed");

    let next = fake.quiet_week();
    assert!(
        next < old,
        "the new sequence starts below the old one: {next} < {old}"
    );
    let new = fake.inject_text(common::CHAT_ID, None, "after the holiday");
    assert_eq!(new, next);
    for _ in 0..3 {
        let (_, again) = call(&fake, "getUpdates", json!({"offset": old_offset})).await;
        assert_eq!(ids(&again), vec![new], "the old offset does not confirm it");
    }
    let (_, confirmed) = call(&fake, "getUpdates", json!({"offset": new + 1})).await;
    assert!(ids(&confirmed).is_empty());
    assert!(fake.pending_update_ids().is_empty());
}

/// A text with a lone UTF-16 surrogate escape comes through as Telegram would send it:
/// JSON that a strict parser refuses.
#[tokio::test]
async fn a_lone_surrogate_escape_is_served_as_is() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    fake.inject_text_with_lone_surrogate(common::CHAT_ID, None, "half a ", " pair");
    let url = format!("{}bot{}/getUpdates", fake.api_url(), fake.token());
    let body = reqwest::Client::new()
        .post(url)
        .json(&json!({}))
        .send()
        .await
        .expect("fake answers")
        .text()
        .await
        .expect("a body");
    assert!(body.contains(r#""half a \ud800 pair""#), "{body}");
    assert!(serde_json::from_str::<Value>(&body).is_err());
}

/// A revoked token: every call is refused until it is accepted again.
#[tokio::test]
async fn a_refused_token_gets_401_everywhere() {
    let fake = FakeBotApi::start().await.expect("fake starts");
    fake.refuse_token(true);
    for method in ["getMe", "getUpdates", "sendMessage"] {
        let (status, body) = call(&fake, method, json!({"chat_id": 1, "text": "x"})).await;
        assert_eq!(
            (status, body["description"].as_str()),
            (401, Some("Unauthorized"))
        );
    }
    fake.refuse_token(false);
    assert_eq!(call(&fake, "getMe", json!({})).await.0, 200);
}

/// baton names the sending device in a header that the fake logs per request. The
/// product and the test kit share no code (the arrow would point the wrong way), so
/// this holds the two names together.
#[test]
fn the_fake_reads_the_device_header_baton_sends() {
    assert_eq!(
        mirror_baton::adapters::telegram::DEVICE_HEADER,
        baton_testkit::fake_bot_api::DEVICE_HEADER
    );
}
