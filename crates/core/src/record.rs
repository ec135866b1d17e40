//! The per-device record: `<sync-root>/<group>/devices/<file>.json`, written only by its
//! owner, and the rules for naming and recognising files in that folder.
//!
//! Owns: the versioned schema, parsing with its tolerance rules, the file name derived from
//! a device id, and the classification of every name a sync tool may leave in the folder
//! (iCloud `name 2.json` copies, Syncthing and Dropbox conflict copies, `.icloud` stubs,
//! temp files), and the checks around persistence (`assert_writable` before our write,
//! `assert_sanitized` after a read). Must never: read or write a file, hold a secret (the
//! bot token is never a field here), or panic on any input (the two checks panic only
//! on our own broken invariants).
//!
//! Why one file over 600 lines: about 600 lines of code (the schema, its bounds, the
//! checks around persistence, names and their classification belong together: each
//! rule reads the others) and 200 of unit tests beside them.

use serde::{Deserialize, Serialize};

/// Major schema version this build writes. A record with a higher major version comes
/// from a newer baton: it is treated as a live peer of unknown intent, never deleted.
pub const SCHEMA_MAJOR: u32 = 1;

/// Records larger than this are refused unread (a record is well under 2 KiB).
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

/// Longest file name we derive, in bytes (APFS/ext4 allow 255; NTFS 255 UTF-16 units).
pub const FILE_NAME_BYTES_MAX: usize = 120;

/// Handled-above ids kept in a record, at most.
pub const HANDLED_ABOVE_MAX: usize = 100;

/// Foreign chat ids kept in a record, at most.
pub const FOREIGN_CHATS_MAX: usize = 100;

/// The highest term taken seriously: four billion role changes, one a second for 136
/// years. A record claiming more is corrupt (a bit flip, a hand edit, a buggy writer):
/// its term is reported and never taken into ours, so our term cannot wrap; see
/// [`sanitize`] and `election::highest_term`.
pub const TERM_MAX: u64 = u32::MAX as u64;

/// The highest `seq` taken seriously (a write a second for 285 million years). A prior
/// record of our own beyond it is not continued from, so `seq + 1` cannot wrap.
pub const SEQ_MAX: u64 = (1 << 53) - 1;

/// The highest update id taken seriously. Telegram's identifiers fit in 52 bits (the Bot
/// API says so of its 64-bit ids; update ids are 32-bit today), and they are positive. A
/// record or an update carrying an id outside `1..=UPDATE_ID_MAX` is corrupt: the id is
/// reported and ignored, never computed with.
pub const UPDATE_ID_MAX: i64 = (1 << 53) - 1;

/// Whether `id` can be a Telegram update id.
pub fn is_sane_update_id(id: i64) -> bool {
    (1..=UPDATE_ID_MAX).contains(&id)
}

/// The longest `--device-name` taken, in bytes: with a path and a hostname, a record
/// stays far below [`RECORD_BYTES_MAX`] (see [`assert_writable`]).
pub const DEVICE_NAME_BYTES_MAX: usize = 1024;

/// The longest `polling_refused` reason kept (it is Telegram's short description).
pub const REFUSAL_CHARS_MAX: usize = 200;

/// What a device says about itself.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Started, watching the folder before it takes part.
    Registering,
    /// Alive, not acting.
    Standby,
    /// Has claimed `term` and waits out the settle window.
    Contending,
    /// Holds `term` and serves the bot.
    Active,
    /// Has stopped acting and hands `term + 1` to `handoff.target`.
    Yielding,
    /// Stopped cleanly; not a candidate for anything.
    Stopped,
    /// A status this build does not know (written by a newer baton).
    #[serde(other)]
    Unknown,
}

impl Status {
    /// Whether this status claims leadership for the record's term.
    pub fn claims(self) -> bool {
        matches!(self, Status::Contending | Status::Active)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Registering => "registering",
            Status::Standby => "standby",
            Status::Contending => "contending",
            Status::Active => "active",
            Status::Yielding => "yielding",
            Status::Stopped => "stopped",
            Status::Unknown => "unknown",
        }
    }
}

/// A handoff in progress: the writer has stopped acting and names its successor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Handoff {
    pub target: String,
    pub term: u64,
}

/// Which active record a standby watched when Telegram answered it (see
/// [`DeviceRecord::telegram_reached`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReachedWhile {
    pub term: u64,
    pub seq: u64,
}

/// A request, published by any standby, that the active device hand over to `target`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ActivationRequest {
    pub target: String,
    /// Unique per request: `<instance>-<counter>`, so the active serves it once.
    pub id: String,
}

/// The device record. Unknown fields are ignored on read, so a newer minor version can
/// add fields freely; removing or re-meaning one needs a new [`SCHEMA_MAJOR`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub schema: u32,
    pub device_id: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub project_dir: String,
    #[serde(default)]
    pub pid: u32,
    /// Random per process start.
    #[serde(default)]
    pub instance: String,
    /// Random per install, kept in a local (not synced) folder: tells a cloned Mac.
    #[serde(default)]
    pub install_id: String,
    /// The writer's boot session (`/proc/sys/kernel/random/boot_id`,
    /// `kern.bootsessionuuid`); absent when unknown. Peers probe the writer's pid only
    /// when it matches their own: a hostname alone is shared by clones and namesakes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot_id: String,
    /// Grows by one on every write. Liveness is "seq seen to change", by the reader's clock.
    pub seq: u64,
    pub status: Status,
    /// The term this device claims (Contending/Active/Yielding) or last held.
    #[serde(default)]
    pub term: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_request: Option<ActivationRequest>,
    /// The last Telegram update id this device handled while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_id: Option<i64>,
    /// Update ids above `last_update_id` that were handled too (commands answered while
    /// an earlier update still waited for the child). At most [`HANDLED_ABOVE_MAX`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handled_above: Vec<i64>,
    /// The term in which this device last served the bot and recorded `last_update_id`
    /// and `handled_above`. A new active device takes its start from the record with the
    /// highest one (`offsets::start_hints`): Telegram's ids start over after a quiet
    /// week, and an older record's higher id must not hide the new sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_term: Option<u64>,
    /// Set while Telegram refuses this device's bot token (its description, e.g.
    /// "Unauthorized"): the device cannot poll, so it is no handoff target and holds off
    /// contending for a while. Cleared when it next becomes active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_refused: Option<String>,
    /// Set by an active device whose getUpdates have failed for a while although its
    /// token was not refused (network, Telegram down): it is cut off, and hands the role
    /// to a standby that says it reached Telegram since (`witness`, `cut_off`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub telegram_unreachable: bool,
    /// A standby's word that Telegram answered it while it watched the active record of
    /// this term and seq (cut off from Telegram): only ever compared with the active
    /// device's own term and seq, never computed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram_reached: Option<ReachedWhile>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<i64>,
    #[serde(default)]
    pub version: String,
    /// Wall clock of the writer, in ms since the Unix epoch. Informational: never compared
    /// with the reader's clock except as a start-up hint with a generous skew allowance.
    #[serde(default)]
    pub written_at_ms: u64,
    /// Chats that sent updates to the bot but are not the configured one (active only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_chats: Vec<i64>,
    /// The chat this device serves: its topic is `thread_id`, or the whole chat when that
    /// is `None` (`routing`). Absent from older records: they serve the group's chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    /// `/activate N` typed in a topic, as the active device that answered it recorded
    /// it: the most recent choice per topic decides among several devices serving it
    /// (`routing::owner`). At most [`TOPIC_CHOICES_MAX`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topic_choices: Vec<TopicChoice>,
    /// Mail this device's child has fetched, per mailbox writer (`mailbox`): the writer
    /// deletes what its addressee acknowledged. At most [`MAIL_ACKED_MAX`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mail_acked: Vec<MailAck>,
}

/// Topic choices kept in a record, at most.
pub const TOPIC_CHOICES_MAX: usize = 64;

/// Mailbox acknowledgements kept in a record, at most (one per writer).
pub const MAIL_ACKED_MAX: usize = 64;

/// `/activate <device>` typed in a topic: that device owns the topic among those serving
/// it. Ordered by (`term`, `seq`): the recording device's term and record seq when it
/// answered, so the most recent choice wins on every device.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TopicChoice {
    pub chat_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<i64>,
    pub device_id: String,
    pub term: u64,
    pub seq: u64,
}

/// "My child has fetched every mail `writer` addressed to me, through `through`, in its
/// mailbox `epoch`." Mail seqs are only compared within one epoch (a writer whose
/// mailbox was lost starts a new one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MailAck {
    pub writer: String,
    pub epoch: String,
    pub through: u64,
}

/// Why a file's contents could not be used as a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is {bytes} bytes, over the {RECORD_BYTES_MAX}-byte limit")]
    TooLarge { bytes: usize },
    #[error("record is empty (probably caught mid-sync)")]
    Empty,
    #[error("record is not valid JSON ({detail}); probably truncated or caught mid-sync")]
    Corrupt { detail: String },
    #[error("record lacks required field or has a wrong type ({detail})")]
    Invalid { detail: String },
    #[error("record names device {found:?} but its file name belongs to another device")]
    WrongFile { found: String },
}

impl RecordError {
    /// A short stable key for "report once" bookkeeping.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordError::TooLarge { .. } => "too_large",
            RecordError::Empty => "empty",
            RecordError::Corrupt { .. } => "corrupt",
            RecordError::Invalid { .. } => "invalid",
            RecordError::WrongFile { .. } => "wrong_file",
        }
    }
}

/// The minimal subset read from a record written by a newer major schema.
#[derive(Deserialize)]
struct NewerSchemaSubset {
    schema: u32,
    device_id: String,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    term: u64,
    #[serde(default = "unknown_status")]
    status: Status,
}

fn unknown_status() -> Status {
    Status::Unknown
}

/// Parses a record's bytes. Never panics; every refusal says what was wrong.
///
/// A record with a newer major schema parses into a record carrying only the fields this
/// build can read (device id, seq, term, status; status `Unknown` when not understood).
pub fn parse_record(bytes: &[u8]) -> Result<DeviceRecord, RecordError> {
    if bytes.len() > RECORD_BYTES_MAX {
        return Err(RecordError::TooLarge { bytes: bytes.len() });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(RecordError::Empty);
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|error| RecordError::Corrupt {
            detail: error.to_string(),
        })?;
    let schema = value.get("schema").and_then(serde_json::Value::as_u64);
    match schema {
        Some(major) if major > u64::from(SCHEMA_MAJOR) => {
            let subset: NewerSchemaSubset =
                serde_json::from_value(value).map_err(|error| RecordError::Invalid {
                    detail: error.to_string(),
                })?;
            Ok(DeviceRecord {
                schema: subset.schema,
                device_id: subset.device_id,
                seq: subset.seq,
                term: subset.term,
                status: subset.status,
                ..DeviceRecord::empty()
            })
        }
        _ => serde_json::from_value(value).map_err(|error| RecordError::Invalid {
            detail: error.to_string(),
        }),
    }
}

impl DeviceRecord {
    fn empty() -> Self {
        DeviceRecord {
            schema: SCHEMA_MAJOR,
            device_id: String::new(),
            hostname: String::new(),
            project_dir: String::new(),
            pid: 0,
            instance: String::new(),
            install_id: String::new(),
            boot_id: String::new(),
            seq: 0,
            status: Status::Registering,
            term: 0,
            handoff: None,
            activation_request: None,
            last_update_id: None,
            handled_above: Vec::new(),
            progress_term: None,
            polling_refused: None,
            telegram_unreachable: false,
            telegram_reached: None,
            priority: 0,
            thread_id: None,
            version: String::new(),
            written_at_ms: 0,
            foreign_chats: Vec::new(),
            chat_id: None,
            topic_choices: Vec::new(),
            mail_acked: Vec::new(),
        }
    }

    /// A fresh record for a device that has written nothing yet.
    pub fn new(identity: &Identity) -> Self {
        DeviceRecord {
            device_id: identity.device_id.clone(),
            hostname: identity.hostname.clone(),
            project_dir: identity.project_dir.clone(),
            pid: identity.pid,
            instance: identity.instance.clone(),
            install_id: identity.install_id.clone(),
            boot_id: identity.boot_id.clone(),
            priority: identity.priority,
            thread_id: identity.thread_id,
            version: identity.version.clone(),
            ..DeviceRecord::empty()
        }
    }

    /// Whether this record came from a newer baton whose intent we cannot fully read.
    pub fn is_newer_schema(&self) -> bool {
        self.schema > SCHEMA_MAJOR
    }

    /// Serialises for the store: pretty JSON with a trailing newline, human-readable.
    pub fn to_json(&self) -> String {
        // BUG-free by construction: a struct of strings, numbers and options always serialises.
        let mut text = serde_json::to_string_pretty(self).expect("BUG: record serialises");
        text.push('\n');
        text
    }
}

/// A number in a record that cannot be true, found by [`sanitize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absurdity {
    /// The field, e.g. `last_update_id`.
    pub field: &'static str,
    pub value: String,
    /// What the reader does about it.
    pub action: &'static str,
}

impl std::fmt::Display for Absurdity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.field, self.value, self.action)
    }
}

/// Checks the numbers of a record read from a file, in place, and lists what could not
/// be true. Every number in a record is untrusted input:
///
/// - Telegram progress (`last_update_id`, `handled_above`, `progress_term`) with an id
///   outside `1..=UPDATE_ID_MAX`, or a `progress_term` above the record's own term, is
///   dropped whole: hints only ever save a duplicate, so a doubtful one is no hint.
/// - A `term` or handoff term above [`TERM_MAX`] is kept (a live claim must still be
///   respected, or two devices would act), but the election never takes it into a new
///   term (`election::highest_term`), so it cannot spread or make ours wrap.
/// - A `seq` above [`SEQ_MAX`] is kept for comparison; a device never continues from it.
/// - A `polling_refused` reason is cut to a sane length.
pub fn sanitize(record: &mut DeviceRecord) -> Vec<Absurdity> {
    let mut found = Vec::new();
    let bad_ids: Vec<i64> = record
        .last_update_id
        .into_iter()
        .chain(record.handled_above.iter().copied())
        .filter(|id| !is_sane_update_id(*id))
        .collect();
    let bad_progress_term = record
        .progress_term
        .filter(|t| *t > record.term.min(TERM_MAX));
    if let Some(id) = bad_ids.first() {
        found.push(Absurdity {
            field: "last_update_id",
            value: id.to_string(),
            action: "not a Telegram update id; its Telegram progress is ignored",
        });
    } else if let Some(term) = bad_progress_term {
        found.push(Absurdity {
            field: "progress_term",
            value: term.to_string(),
            action: "above the record's own term; its Telegram progress is ignored",
        });
    }
    if !bad_ids.is_empty() || bad_progress_term.is_some() {
        record.last_update_id = None;
        record.handled_above.clear();
        record.progress_term = None;
    }
    record.handled_above.truncate(HANDLED_ABOVE_MAX);
    record.topic_choices.truncate(TOPIC_CHOICES_MAX);
    record.mail_acked.truncate(MAIL_ACKED_MAX);
    let handoff_term = record.handoff.as_ref().map_or(0, |h| h.term);
    if let Some(term) = [record.term, handoff_term]
        .into_iter()
        .find(|t| *t > TERM_MAX)
    {
        found.push(Absurdity {
            field: "term",
            value: term.to_string(),
            action: "beyond any real term; respected while live, never taken into ours",
        });
    }
    if record.seq > SEQ_MAX {
        found.push(Absurdity {
            field: "seq",
            value: record.seq.to_string(),
            action: "beyond any real write count; never continued from",
        });
    }
    if let Some(reason) = &mut record.polling_refused
        && reason.chars().count() > REFUSAL_CHARS_MAX
    {
        *reason = reason.chars().take(REFUSAL_CHARS_MAX).collect();
    }
    found
}

/// Asserts what must hold of a record THIS device is about to write (TigerBeetle: assert
/// around persistence): it is under the size cap and reads back, through the very parser
/// peers use, as itself. Every field of our record is ours or bounded on the way in
/// (`record::sanitize`, the core's ingest), so a failure is our bug: it panics with
/// `BUG:` rather than publish a record peers would reject.
pub fn assert_writable(record: &DeviceRecord) {
    let text = record.to_json();
    assert!(
        text.len() <= RECORD_BYTES_MAX,
        "BUG: our own record is {} bytes, over the {RECORD_BYTES_MAX}-byte cap peers accept",
        text.len()
    );
    match parse_record(text.as_bytes()) {
        Ok(parsed) => assert!(
            parsed == *record,
            "BUG: our own record does not read back as itself (seq {})",
            record.seq
        ),
        Err(error) => panic!("BUG: our own record does not parse back: {error}"),
    }
}

/// Asserts what [`sanitize`] promises of a record read from a file: Telegram progress
/// only of sane ids, at most [`HANDLED_ABOVE_MAX`] of them, from no later term than the
/// record's own, and a bounded refusal reason. A peer's bad file is reported and
/// sanitised, never a panic; a failure here means `sanitize` itself is broken.
pub fn assert_sanitized(record: &DeviceRecord) {
    let ids_sane = record
        .last_update_id
        .into_iter()
        .chain(record.handled_above.iter().copied())
        .all(is_sane_update_id);
    assert!(
        ids_sane,
        "BUG: a sanitised record carries an absurd update id"
    );
    assert!(
        record.handled_above.len() <= HANDLED_ABOVE_MAX,
        "BUG: a sanitised record carries {} handled_above ids",
        record.handled_above.len()
    );
    assert!(
        record
            .progress_term
            .is_none_or(|term| term <= record.term.min(TERM_MAX)),
        "BUG: a sanitised record's progress_term is above its term"
    );
    assert!(
        record
            .polling_refused
            .as_ref()
            .is_none_or(|reason| reason.chars().count() <= REFUSAL_CHARS_MAX),
        "BUG: a sanitised record's refusal reason is not cut"
    );
}

/// Who this process is. Built by the CLI from flags, hostname and the local state dir.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub device_id: String,
    pub hostname: String,
    pub project_dir: String,
    pub pid: u32,
    pub instance: String,
    pub install_id: String,
    /// This boot of this machine (empty when unknown): a pid means something only to a
    /// process on the same boot, and two Macs can share a hostname.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot_id: String,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub thread_id: Option<i64>,
    #[serde(default)]
    pub version: String,
}

/// The device id: `hostname:directory`, or `name@hostname:directory` with a device name.
pub fn device_id(name: Option<&str>, hostname: &str, project_dir: &str) -> String {
    match name {
        Some(name) if !name.is_empty() => format!("{name}@{hostname}:{project_dir}"),
        _ => format!("{hostname}:{project_dir}"),
    }
}

/// 64-bit FNV-1a: stable across builds and platforms (std's hasher is not).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

const SLUG_BYTES_MAX: usize = 80;

/// The file stem for a device id: a readable slug plus a 16-hex-digit hash of the full id.
/// Safe on APFS, ext4 and NTFS (only `[a-z0-9-]`), at most 97 bytes, collision-resistant.
pub fn file_stem(device_id: &str) -> String {
    let mut slug = String::with_capacity(SLUG_BYTES_MAX);
    let mut last_dash = true;
    for character in device_id.chars() {
        if slug.len() >= SLUG_BYTES_MAX {
            break;
        }
        if character.is_ascii_alphanumeric() {
            slug.push(character.to_ascii_lowercase());
            last_dash = false;
        } else if !last_dash {
            slug.push('-');
            last_dash = true;
        }
    }
    let slug = slug.trim_matches('-');
    let slug = if slug.is_empty() { "device" } else { slug };
    format!("{slug}-{:016x}", stable_hash(device_id.as_bytes()))
}

/// The record file name for a device id.
pub fn file_name(device_id: &str) -> String {
    format!("{}.json", file_stem(device_id))
}

/// What a name in the devices folder is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NameKind {
    /// `<stem>.json`: a device record.
    Record { stem: String },
    /// A copy a sync tool made of `<stem>.json` after a conflict; only its owner deletes it.
    ConflictCopy { stem: String },
    /// `.<stem>.json.icloud`: iCloud evicted the file; the real one must be downloaded.
    IcloudStub { stem: String },
    /// A temp file (ours or a sync tool's): ignored.
    Temp,
    /// Anything else (`.DS_Store`, notes a user left): ignored.
    Foreign,
}

fn is_stem(candidate: &str) -> bool {
    let Some((slug, hash)) = candidate.rsplit_once('-') else {
        return false;
    };
    hash.len() == 16
        && hash
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && !slug.is_empty()
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Classifies a file name found in the devices folder. Pure and total.
pub fn classify_name(name: &str) -> NameKind {
    if name.ends_with(".tmp") || name.ends_with(".nosync") || name.starts_with("~$") {
        return NameKind::Temp;
    }
    if let Some(inner) = name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_suffix(".json.icloud"))
    {
        if is_stem(inner) {
            return NameKind::IcloudStub {
                stem: inner.to_string(),
            };
        }
        return NameKind::Foreign;
    }
    if let Some(stem) = name.strip_suffix(".json") {
        if is_stem(stem) {
            return NameKind::Record {
                stem: stem.to_string(),
            };
        }
        if let Some(stem) = conflict_copy_of(stem) {
            return NameKind::ConflictCopy { stem };
        }
        return NameKind::Foreign;
    }
    // rclone bisync: `<stem>.json.conflict1`, `<stem>.json..path1`
    if let Some((before, _)) = name.split_once(".json.")
        && is_stem(before)
    {
        return NameKind::ConflictCopy {
            stem: before.to_string(),
        };
    }
    NameKind::Foreign
}

/// Recognises `<stem> 2` (iCloud), `<stem>.sync-conflict-…` (Syncthing) and
/// `<stem> (… conflicted copy …)` (Dropbox).
fn conflict_copy_of(base: &str) -> Option<String> {
    let icloud = base
        .rsplit_once(' ')
        .filter(|(_, number)| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()));
    let syncthing = base.split_once(".sync-conflict-");
    let dropbox = base
        .split_once(" (")
        .filter(|(_, rest)| rest.contains("conflicted copy"));
    [icloud, syncthing, dropbox]
        .into_iter()
        .flatten()
        .map(|(stem, _)| stem)
        .find(|stem| is_stem(stem))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeviceRecord {
        let identity = Identity {
            device_id: "mac:/Users/a/proj".into(),
            hostname: "mac".into(),
            project_dir: "/Users/a/proj".into(),
            pid: 42,
            instance: "i1".into(),
            install_id: "inst".into(),
            boot_id: String::new(),
            priority: 0,
            thread_id: None,
            version: "0.1.0".into(),
        };
        DeviceRecord::new(&identity)
    }

    #[test]
    fn our_record_passes_the_check_before_writing() {
        assert_writable(&sample());
    }

    #[test]
    #[should_panic(expected = "BUG: our own record is")]
    fn a_record_over_the_cap_is_never_written() {
        let mut record = sample();
        record.polling_refused = Some("x".repeat(RECORD_BYTES_MAX));
        assert_writable(&record);
    }

    #[test]
    fn a_sanitised_absurd_record_passes_the_check_after_reading() {
        let mut record = sample();
        record.term = 3;
        record.last_update_id = Some(-5);
        record.handled_above = (1..=500).collect();
        record.progress_term = Some(9);
        record.polling_refused = Some("y".repeat(1000));
        assert!(!sanitize(&mut record).is_empty());
        assert_sanitized(&record);
    }

    #[test]
    #[should_panic(expected = "BUG: a sanitised record")]
    fn an_unsanitised_absurd_record_fails_the_check_after_reading() {
        let mut record = sample();
        record.last_update_id = Some(-5);
        assert_sanitized(&record);
    }

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let record = sample();
        let mut value: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        value["from_the_future"] = serde_json::json!({"x": 1});
        let parsed = parse_record(value.to_string().as_bytes()).unwrap();
        assert_eq!(parsed, record);
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        assert_eq!(parse_record(b""), Err(RecordError::Empty));
        assert!(matches!(
            parse_record(b"{\"schema\":1,\"dev"),
            Err(RecordError::Corrupt { .. })
        ));
        assert!(matches!(
            parse_record(b"{\"schema\":1}"),
            Err(RecordError::Invalid { .. })
        ));
        let huge = vec![b' '; RECORD_BYTES_MAX + 1];
        assert!(matches!(
            parse_record(&huge),
            Err(RecordError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_record(&[0xff, 0xfe, 0x00]),
            Err(RecordError::Corrupt { .. })
        ));
    }

    #[test]
    fn newer_schema_is_read_as_a_peer_of_unknown_intent() {
        let text =
            br#"{"schema":7,"device_id":"x","seq":9,"status":"orbiting","term":4,"new":[1]}"#;
        let record = parse_record(text).unwrap();
        assert!(record.is_newer_schema());
        assert_eq!(record.status, Status::Unknown);
        assert_eq!((record.seq, record.term), (9, 4));
    }

    #[test]
    fn absurd_numbers_are_found_and_never_kept_as_progress() {
        let mut record = sample();
        record.term = 7;
        record.last_update_id = Some(i64::MAX);
        record.handled_above = vec![5];
        record.progress_term = Some(7);
        let found = sanitize(&mut record);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "last_update_id");
        assert_eq!(
            (
                record.last_update_id,
                record.handled_above.len(),
                record.progress_term
            ),
            (None, 0, None)
        );

        let mut record = sample();
        record.term = u64::MAX;
        record.seq = u64::MAX;
        record.last_update_id = Some(10);
        record.progress_term = Some(3);
        let found = sanitize(&mut record);
        let fields: Vec<&str> = found.iter().map(|a| a.field).collect();
        assert_eq!(fields, vec!["term", "seq"]);
        assert_eq!(
            record.term,
            u64::MAX,
            "kept: a live claim is still respected"
        );
        assert_eq!(record.last_update_id, Some(10), "sane progress stays");

        let mut record = sample();
        record.term = 2;
        record.last_update_id = Some(10);
        record.progress_term = Some(9);
        assert_eq!(sanitize(&mut record)[0].field, "progress_term");
        assert_eq!(record.last_update_id, None);

        let mut record = sample();
        record.term = 3;
        record.last_update_id = Some(10);
        record.handled_above = vec![12];
        record.progress_term = Some(3);
        let before = record.clone();
        assert!(sanitize(&mut record).is_empty());
        assert_eq!(record, before);
    }

    #[test]
    fn file_names_are_safe_short_and_distinct() {
        let long = format!("名前@host:/{}", "deep/".repeat(100));
        for id in ["a:/x", "A:/x", "a:/x ", &long, "", "<*_>"] {
            let name = file_name(id);
            assert!(name.len() <= FILE_NAME_BYTES_MAX, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            );
            assert_eq!(
                classify_name(&name),
                NameKind::Record {
                    stem: file_stem(id)
                }
            );
        }
        assert_ne!(file_name("a:/x"), file_name("A:/x"));
    }

    #[test]
    fn classifies_what_sync_tools_leave_behind() {
        let stem = file_stem("mac:/p");
        let cases = [
            (
                format!("{stem} 2.json"),
                NameKind::ConflictCopy { stem: stem.clone() },
            ),
            (
                format!("{stem}.sync-conflict-20240101-101010-ABCDEF.json"),
                NameKind::ConflictCopy { stem: stem.clone() },
            ),
            (
                format!("{stem} (Bob's conflicted copy 2024-01-01).json"),
                NameKind::ConflictCopy { stem: stem.clone() },
            ),
            (
                format!("{stem}.json.conflict1"),
                NameKind::ConflictCopy { stem: stem.clone() },
            ),
            (
                format!(".{stem}.json.icloud"),
                NameKind::IcloudStub { stem: stem.clone() },
            ),
            (format!(".{stem}.json.tmp"), NameKind::Temp),
            (format!(".syncthing.{stem}.json.tmp"), NameKind::Temp),
            (format!("~syncthing~{stem}.json.tmp"), NameKind::Temp),
            (".DS_Store".to_string(), NameKind::Foreign),
            ("notes.json".to_string(), NameKind::Foreign),
        ];
        for (name, kind) in cases {
            assert_eq!(classify_name(&name), kind, "{name}");
        }
    }
}
