//! The loopback updates gateway: serves opencode-telegram-mirror's updates contract.
//!
//! Owns: an HTTP server on `127.0.0.1` (random port) answering
//! `GET /updates?since=<last update_id handled>&chat_id=<id>[&thread_id=<id>]` with
//! `{"updates":[{"payload":<Telegram Update>,"update_id":n},…]}`; the per-run random Basic
//! auth credentials (embedded in [`Gateway::updates_url`], required on every request); a
//! bounded buffer of forwarded updates; and the acknowledgements: the runtime's proof
//! that the child fetched an update, after which the poller may confirm it to Telegram.
//!
//! What `since` means. The mirror sets `since` to the last `update_id` of each batch it
//! gets, BEFORE processing it, and keeps it in its database across restarts. So `since`
//! is only evidence about updates this gateway *served* (offered in a response): a
//! request's `since` acknowledges (drops) the served updates up to the one whose id it
//! names — or, within the latest run of served ids of one sequence, up to the highest id
//! ≤ `since`. A `since` above every id served (from an earlier run, another mirror, or
//! Telegram's previous id sequence) acknowledges nothing: the child is served what it has
//! not acknowledged, in order, whatever its `since`. An update is served again until it
//! is acknowledged.
//!
//! Telegram's ids start over after a quiet week ([`Gateway::restart_sequence`], called
//! when the poller reports it): ids are compared only within one *generation*, and the
//! acknowledgement published on the `watch` channel ([`Acknowledged`]) names its
//! generation, so an old-sequence `since` never acknowledges a new-sequence id.
//!
//! Overflow policy: the buffer holds at most `capacity` updates. Pushing into a full buffer
//! drops the OLDEST update (the child has been away longest from it), counts it in
//! [`GatewayStats::dropped_total`], logs one warning per overflow episode (an episode
//! ends when the buffer falls below capacity again), and counts the dropped id as
//! acknowledged, so confirmation to Telegram never stalls behind it.
//!
//! Trouble between baton and its child is visible: the first request refused in a run of
//! refusals (401 without the credentials, 400 for a malformed query, 403 for another
//! chat or topic) is a warning in baton's log saying what the child asked and what baton
//! serves; a served request ends the run. (The mirror retries a refused request every
//! 5 s, silently.)
//!
//! Must never: listen on anything but loopback, serve without the credentials, serve an
//! update outside the configured chat/topic, let `since` acknowledge an update it never
//! served, or log the credentials.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use rand::Rng as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::telegram_config::Secret;
use super::update_route::UpdateRoute;

/// How many updates one response carries at most; the child asks again for the rest.
const RESPONSE_UPDATES_MAX: usize = 100;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub chat_id: i64,
    /// The one topic served; `None` serves the whole chat.
    pub thread_id: Option<i64>,
    /// Buffered updates at most; see the module doc for the overflow policy.
    pub capacity: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(std::io::Error),
}

/// What [`Gateway::push`] did with an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Buffered,
    /// The buffer was full: the oldest update was dropped to make room.
    BufferedDroppingOldest,
    /// Its id is not above the highest id pushed so far (a redelivery).
    Duplicate,
    /// Not in the configured chat/topic; never served.
    Rejected,
}

/// What the child has acknowledged, published for the poller (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Acknowledged {
    /// Grows by one at every [`Gateway::restart_sequence`]: ids compare only within one
    /// generation. The poller's ledger counts the same restarts.
    pub generation: u64,
    /// Every update of this generation with an id ≤ this was acknowledged by the child
    /// or dropped on overflow (0: none yet).
    pub through: i64,
    /// Updates served and not acknowledged yet, of any generation.
    pub outstanding: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayStats {
    pub buffered: usize,
    pub dropped_total: u64,
    pub overflow_episodes: u64,
    /// The highest id pushed in the current generation.
    pub highest_pushed: i64,
    /// The highest id included in any response in the current generation.
    pub highest_served: i64,
    /// As published in [`Acknowledged::through`].
    pub acknowledged_through: i64,
    pub unauthorized_requests: u64,
    pub generation: u64,
}

struct Entry {
    id: i64,
    generation: u64,
    payload: Arc<Value>,
    /// Offered in a response (included, or passed over by the request's topic filter).
    /// Served entries are always a prefix of the buffer.
    served: bool,
    /// Mail routed from the synced folder (issue 11), with the reader's tag: it was
    /// confirmed to Telegram by the device that routed it, so its fetch is reported to
    /// the mail reader ([`Gateway::take_routed_fetched`]) and never moves `through`.
    routed: Option<u64>,
}

struct Buffer {
    entries: VecDeque<Entry>,
    in_overflow: bool,
    stats: GatewayStats,
    /// The last response carried updates new to the child, and it has not asked again
    /// since: it is processing them (the mirror asks again only when it is done with a
    /// batch, and acknowledges it then).
    processing: bool,
    /// Inside a run of refused requests (only the first of a run is a warning).
    refusing: bool,
    /// Tags of routed mail the child fetched, not yet taken by the mail reader.
    routed_fetched: Vec<u64>,
}

impl Buffer {
    fn served(&self) -> usize {
        self.entries.iter().take_while(|e| e.served).count()
    }

    fn acknowledged(&self) -> Acknowledged {
        Acknowledged {
            generation: self.stats.generation,
            through: self.stats.acknowledged_through,
            outstanding: self.served(),
        }
    }

    /// Notes that `entry` is acknowledged (or dropped) and leaves the buffer.
    fn done(&mut self, entry: &Entry) {
        if let Some(tag) = entry.routed {
            self.routed_fetched.push(tag);
            return;
        }
        if entry.generation == self.stats.generation {
            let through = &mut self.stats.acknowledged_through;
            *through = (*through).max(entry.id);
        }
    }
}

struct Shared {
    config: GatewayConfig,
    expected_authorization: String,
    buffer: Mutex<Buffer>,
    acknowledged_tx: watch::Sender<Acknowledged>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A poisoned lock only means a panic elsewhere mid-update; the buffer stays usable.
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the acknowledgement state, waking watchers only when it changed.
    fn publish(&self, buffer: &mut Buffer) {
        buffer.stats.buffered = buffer.entries.len();
        if buffer.entries.len() < self.config.capacity {
            buffer.in_overflow = false;
        }
        let now = buffer.acknowledged();
        self.acknowledged_tx.send_if_modified(|published| {
            let changed = *published != now;
            *published = now;
            changed
        });
    }
}

/// A running gateway; dropping it stops the server.
pub struct Gateway {
    shared: Arc<Shared>,
    updates_url: Secret,
    /// The password and the Basic header value, for scrubbing the child's output.
    credentials: [Secret; 2],
    local_addr: SocketAddr,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Gateway {
    /// Binds `127.0.0.1:0`, draws fresh credentials and starts serving in a tokio task.
    ///
    /// Call once per baton run, before starting the child (its `TELEGRAM_UPDATES_URL`).
    pub async fn start(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(GatewayError::Bind)?;
        let local_addr = listener.local_addr().map_err(GatewayError::Bind)?;
        let password = random_password();
        let user = "baton";
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let (acknowledged_tx, _) = watch::channel(Acknowledged::default());
        let shared = Arc::new(Shared {
            config: GatewayConfig {
                capacity: config.capacity.max(1),
                ..config
            },
            expected_authorization: format!("Basic {credentials}"),
            buffer: Mutex::new(Buffer {
                entries: VecDeque::new(),
                in_overflow: false,
                stats: GatewayStats::default(),
                processing: false,
                refusing: false,
                routed_fetched: Vec::new(),
            }),
            acknowledged_tx,
        });
        let router = Router::new()
            .route("/updates", get(serve_updates))
            .with_state(shared.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let serve = async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "updates gateway stopped");
            }
        };
        tokio::spawn(tracing::Instrument::in_current_span(serve));
        let updates_url = Secret::new(format!("http://{user}:{password}@{local_addr}/updates"));
        Ok(Gateway {
            shared,
            updates_url,
            credentials: [Secret::new(password), Secret::new(credentials)],
            local_addr,
            shutdown,
        })
    }

    /// The value for the child's `TELEGRAM_UPDATES_URL` (credentials included).
    pub fn updates_url(&self) -> &Secret {
        &self.updates_url
    }

    /// Every form of the credentials a child may print: the URL, the password, the
    /// Basic header value (scrubbed from its output before it reaches the log).
    pub fn secrets(&self) -> Vec<Secret> {
        let mut secrets = vec![self.updates_url.clone()];
        secrets.extend(self.credentials.iter().cloned());
        secrets
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the child acknowledged so far (generation 0, through 0, before anything).
    ///
    /// Hand this to the poller: a forwarded update of the ledger's generation with an id
    /// ≤ `through` may be confirmed.
    pub fn acknowledged(&self) -> watch::Receiver<Acknowledged> {
        self.shared.acknowledged_tx.subscribe()
    }

    pub fn stats(&self) -> GatewayStats {
        self.shared.lock().stats
    }

    /// True while the child is processing the last batch it was served: the response
    /// carried updates it had not been served before, and it has not asked again since.
    /// A child that asks again without acknowledging, or is not asking at all, is not.
    pub fn child_is_processing(&self) -> bool {
        self.shared.lock().processing
    }

    /// Buffers one update for the child. Call for every `PollerEvent::Forward`, in order.
    pub fn push(&self, update_id: i64, payload: Value) -> PushOutcome {
        let config = &self.shared.config;
        if !UpdateRoute::of(&payload).is_in(config.chat_id, config.thread_id) {
            return PushOutcome::Rejected;
        }
        let mut buffer = self.shared.lock();
        if update_id <= buffer.stats.highest_pushed {
            return PushOutcome::Duplicate;
        }
        buffer.stats.highest_pushed = update_id;
        let mut outcome = PushOutcome::Buffered;
        if buffer.entries.len() >= config.capacity
            && let Some(dropped) = buffer.entries.pop_front()
        {
            // Dropped mail is not fetched: it stays in its mailbox, unacknowledged.
            if dropped.routed.is_none() {
                buffer.done(&dropped);
            }
            buffer.stats.dropped_total += 1;
            outcome = PushOutcome::BufferedDroppingOldest;
            if !buffer.in_overflow {
                buffer.in_overflow = true;
                buffer.stats.overflow_episodes += 1;
                tracing::warn!(
                    capacity = config.capacity,
                    "updates gateway full: the child is not fetching; dropping the oldest updates"
                );
            }
        }
        let generation = buffer.stats.generation;
        buffer.entries.push_back(Entry {
            id: update_id,
            generation,
            payload: Arc::new(payload),
            served: false,
            routed: None,
        });
        self.shared.publish(&mut buffer);
        outcome
    }

    /// Buffers one routed mail for the child (issue 11), tagged by the mail reader. No
    /// duplicate check by id (the reader dedupes: mail that waited may carry ids below
    /// what this gateway has seen) and no effect on [`Acknowledged::through`]: its fetch
    /// is reported by [`Gateway::take_routed_fetched`]. `Rejected` outside the chat/topic.
    pub fn push_routed(&self, tag: u64, update_id: i64, payload: Value) -> PushOutcome {
        let config = &self.shared.config;
        if !UpdateRoute::of(&payload).is_in(config.chat_id, config.thread_id) {
            return PushOutcome::Rejected;
        }
        let mut buffer = self.shared.lock();
        if buffer.entries.len() >= config.capacity {
            // Full: the mail stays in its mailbox and is offered again after a restart.
            return PushOutcome::BufferedDroppingOldest;
        }
        let generation = buffer.stats.generation;
        buffer.entries.push_back(Entry {
            id: update_id,
            generation,
            payload: Arc::new(payload),
            served: false,
            routed: Some(tag),
        });
        self.shared.publish(&mut buffer);
        PushOutcome::Buffered
    }

    /// The tags of routed mail the child has fetched since the last call.
    pub fn take_routed_fetched(&self) -> Vec<u64> {
        std::mem::take(&mut self.shared.lock().routed_fetched)
    }

    /// Telegram's ids started over (`PollerEvent::SequenceRestarted`): from now on ids
    /// compare within a new generation, and acknowledgements are published in it. Call
    /// before pushing the first update of the new sequence. Updates already buffered stay
    /// and are served first.
    pub fn restart_sequence(&self) {
        let mut buffer = self.shared.lock();
        let stats = &mut buffer.stats;
        stats.generation = stats.generation.saturating_add(1);
        stats.highest_pushed = 0;
        stats.highest_served = 0;
        stats.acknowledged_through = 0;
        self.shared.publish(&mut buffer);
    }

    /// Takes back every buffered update the child has not been served yet and returns the
    /// highest id it was served in the current generation.
    ///
    /// Call on leaving Active, after stopping the poller: the next active device delivers
    /// the withdrawn updates, so this child must not fetch them too. Served but not yet
    /// acknowledged updates stay: the child has them; wait (bounded) until
    /// [`Acknowledged::outstanding`] is 0 before writing the record.
    pub fn withdraw_unserved(&self) -> i64 {
        let mut buffer = self.shared.lock();
        // Routed mail stays: it is this device's to serve whatever its role.
        buffer
            .entries
            .retain(|entry| entry.served || entry.routed.is_some());
        let generation = buffer.stats.generation;
        let highest_buffered = buffer
            .entries
            .iter()
            .filter(|entry| entry.generation == generation)
            .map(|entry| entry.id)
            .max()
            .unwrap_or(0);
        // Withdrawn ids may come back in a later term: they must not count as duplicates.
        buffer.stats.highest_pushed = highest_buffered.max(buffer.stats.acknowledged_through);
        self.shared.publish(&mut buffer);
        buffer.stats.highest_served
    }

    /// Stops the server; in-flight requests finish.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

fn random_password() -> String {
    // Credentials must be unpredictable to other local users, so they come from OS
    // entropy rather than the run's (reproducible) seed.
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

#[derive(Debug, Deserialize)]
struct UpdatesQuery {
    since: Option<i64>,
    chat_id: Option<i64>,
    thread_id: Option<i64>,
}

async fn serve_updates(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    query: Result<Query<UpdatesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let asked = uri.query().unwrap_or("");
    if !authorized(&shared.expected_authorization, &headers) {
        shared.lock().stats.unauthorized_requests += 1;
        refused(
            &shared,
            401,
            asked,
            "it did not send baton's credentials: it must use TELEGRAM_UPDATES_URL exactly as baton sets it (user and password included)",
        );
        let body = Json(json!({"error": "unauthorized"}));
        let challenge = [(header::WWW_AUTHENTICATE, "Basic realm=\"baton\"")];
        return (StatusCode::UNAUTHORIZED, challenge, body).into_response();
    }
    let Ok(Query(query)) = query else {
        refused(
            &shared,
            400,
            asked,
            "since, chat_id and thread_id must be integers",
        );
        let body = Json(json!({"error": "since, chat_id and thread_id must be integers"}));
        return (StatusCode::BAD_REQUEST, body).into_response();
    };
    let config = &shared.config;
    if let Some(chat) = query.chat_id.filter(|c| *c != config.chat_id) {
        let why = format!(
            "it asked for chat {chat}; baton serves chat {}: set the mirror's chat (TELEGRAM_CHAT_ID, or chatId in its telegram.json) and baton's (--chat-id) alike",
            config.chat_id
        );
        refused(&shared, 403, asked, &why);
        return forbidden("chat_id is not the chat this baton serves");
    }
    let thread_id = match (query.thread_id, config.thread_id) {
        (Some(asked_thread), Some(served)) if asked_thread != served => {
            let why = format!(
                "it asked for topic {asked_thread}; baton serves topic {served} of chat {}: set the mirror's topic (TELEGRAM_THREAD_ID, or threadId) and baton's (--thread-id) alike",
                config.chat_id
            );
            refused(&shared, 403, asked, &why);
            return forbidden("thread_id is not the topic this baton serves");
        }
        (asked, served) => asked.or(served),
    };
    let updates: Vec<Value> = {
        let mut buffer = shared.lock();
        buffer.refusing = false;
        if let Some(since) = query.since {
            acknowledge(&mut buffer, since);
        }
        let updates = offer(&mut buffer, config.chat_id, thread_id);
        shared.publish(&mut buffer);
        updates
    };
    Json(json!({ "updates": updates })).into_response()
}

/// Notes a refused request; the first of a run of refusals is a warning.
fn refused(shared: &Shared, status: u16, asked: &str, why: &str) {
    let first = !std::mem::replace(&mut shared.lock().refusing, true);
    if first {
        // The query carries no credentials (they travel in the Authorization header);
        // it is bounded and escaped, as it is the child's text.
        let asked: String = asked.chars().take(200).collect();
        tracing::warn!(
            status,
            asked = ?asked,
            "the updates gateway refused the child's request ({status}): {why}; the child keeps asking, and gets nothing until this is fixed"
        );
    }
}

/// The response: every update not acknowledged yet, in order, in the asked topic, at
/// most [`RESPONSE_UPDATES_MAX`]. Each update looked at becomes served (one outside the
/// topic too: this child will not take it, and its next `since` passes over it).
///
/// Sets `processing` when the response carries an update the child had not been served
/// before: a child asking again without acknowledging gets the same updates, and is not
/// busy with them.
fn offer(buffer: &mut Buffer, chat_id: i64, thread_id: Option<i64>) -> Vec<Value> {
    let generation = buffer.stats.generation;
    let mut updates = Vec::new();
    let mut highest_served = buffer.stats.highest_served;
    let mut new_to_child = false;
    for entry in buffer.entries.iter_mut() {
        if updates.len() >= RESPONSE_UPDATES_MAX {
            break;
        }
        let first_time = !std::mem::replace(&mut entry.served, true);
        if UpdateRoute::of(&entry.payload).is_in(chat_id, thread_id) {
            new_to_child |= first_time;
            updates.push(json!({"payload": entry.payload.as_ref(), "update_id": entry.id}));
            if entry.generation == generation {
                highest_served = highest_served.max(entry.id);
            }
        }
    }
    buffer.stats.highest_served = highest_served;
    buffer.processing = new_to_child;
    updates
}

fn forbidden(reason: &str) -> Response {
    (StatusCode::FORBIDDEN, Json(json!({ "error": reason }))).into_response()
}

/// Applies `since`: drops the served updates it acknowledges (see the module doc).
fn acknowledge(buffer: &mut Buffer, since: i64) {
    let Some(cut) = acknowledged_up_to(&buffer.entries, buffer.served(), since) else {
        return;
    };
    let acknowledged: Vec<Entry> = buffer.entries.drain(..=cut).collect();
    for entry in &acknowledged {
        buffer.done(entry);
    }
}

/// The index of the last served entry `since` acknowledges: the latest served one with
/// that very id, or else, within the latest run of served entries of one generation
/// (their ids increase), the last with an id ≤ `since` — provided `since` lies inside
/// that run's ids. A `since` above every id served is nothing this gateway served.
fn acknowledged_up_to(entries: &VecDeque<Entry>, served: usize, since: i64) -> Option<usize> {
    if let Some(exact) = (0..served).rev().find(|i| entries[*i].id == since) {
        return Some(exact);
    }
    let last = served.checked_sub(1)?;
    let generation = entries[last].generation;
    let run_start = (0..served)
        .rev()
        .take_while(|i| entries[*i].generation == generation)
        .last()?;
    if since < entries[run_start].id || since > entries[last].id {
        return None;
    }
    (run_start..served).rev().find(|i| entries[*i].id <= since)
}

/// Compares the whole header in constant time, so response timing reveals nothing.
fn authorized(expected: &str, headers: &HeaderMap) -> bool {
    let Some(given) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let given = given.as_bytes();
    let expected = expected.as_bytes();
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}
