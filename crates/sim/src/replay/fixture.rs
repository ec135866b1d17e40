//! The fixture format: one device's inputs over time, as JSON Lines (see
//! `fixtures/README.md` for the manual).
//!
//! Owns: the header and line types, and parsing them with errors that name the line and
//! what is wrong. Must never: panic on any input, or accept a line whose time runs
//! backwards (a replay must be a possible history).

use std::path::Path;

use serde::{Deserialize, Serialize};

use baton_core::{Event, FileObservation, Identity, Input, Moment, Timing};

/// The only fixture format version so far.
pub const FIXTURE_VERSION: u32 = 1;

/// Lines in one fixture, at most: a bound, so a runaway recording cannot exhaust memory.
pub const FIXTURE_LINES_MAX: usize = 200_000;

/// Which timing constants the replayed device uses.
#[derive(Clone, Debug, PartialEq)]
pub enum TimingSpec {
    /// `"default"`: [`Timing::default`].
    Default,
    /// `{"scale": F}`: the defaults multiplied by `F` (as `--time-scale F`).
    Scaled(f64),
    /// A full [`Timing`] object.
    Full(Box<Timing>),
}

impl TimingSpec {
    pub fn resolve(&self) -> Timing {
        match self {
            TimingSpec::Default => Timing::default(),
            TimingSpec::Scaled(factor) => Timing::default().scaled(*factor),
            TimingSpec::Full(timing) => **timing,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            TimingSpec::Default => serde_json::json!("default"),
            TimingSpec::Scaled(factor) => serde_json::json!({ "scale": factor }),
            TimingSpec::Full(timing) => serde_json::json!(timing),
        }
    }

    fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        if value.as_str() == Some("default") {
            return Ok(TimingSpec::Default);
        }
        if let Some(object) = value.as_object()
            && object.len() == 1
            && let Some(scale) = object.get("scale")
        {
            return match scale.as_f64() {
                Some(factor) if factor.is_finite() && factor > 0.0 => {
                    Ok(TimingSpec::Scaled(factor))
                }
                _ => Err(format!(
                    "timing.scale must be a positive number, not {scale}"
                )),
            };
        }
        serde_json::from_value::<Timing>(value.clone())
            .map(|timing| TimingSpec::Full(Box::new(timing)))
            .map_err(|error| {
                format!(
                    "timing must be \"default\", {{\"scale\": F}} or a full Timing object \
                     ({error})"
                )
            })
    }
}

/// Which effects the replayer answers by itself, as a runtime would.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Auto {
    /// Answer `StopActing` with `ActingStopped` at once (default true).
    #[serde(default = "yes")]
    pub acting_stopped: bool,
    /// Answer `Rescan` with `Scanned` built from the replayer's model of the folder
    /// (default true).
    #[serde(default = "yes")]
    pub rescan: bool,
    /// Answer `WriteRecord` with `RecordWritten` at once: every write reaches the disk
    /// (default true). With false, the fixture answers writes itself. Written to a
    /// header only when false: fixtures made before it existed stay as they were.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub record_written: bool,
}

fn is_yes(value: &bool) -> bool {
    *value
}

fn yes() -> bool {
    true
}

impl Default for Auto {
    fn default() -> Self {
        Auto {
            acting_stopped: true,
            rescan: true,
            record_written: true,
        }
    }
}

/// Line 1 of a fixture.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub description: String,
    pub seed: u64,
    pub identity: Identity,
    pub timing: TimingSpec,
    pub auto: Auto,
    /// Replay until this moment so trailing timers fire; default: the last line's time.
    pub end_ms: Option<u64>,
}

/// The header as written: `timing` is interpreted by hand for a clearer error.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    fixture: u32,
    #[serde(default)]
    description: String,
    seed: u64,
    identity: Identity,
    #[serde(default = "default_timing")]
    timing: serde_json::Value,
    #[serde(default)]
    auto: Auto,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_ms: Option<u64>,
}

fn default_timing() -> serde_json::Value {
    serde_json::json!("default")
}

impl Header {
    /// The header as one JSON line (no newline).
    pub fn to_line(&self) -> String {
        let raw = RawHeader {
            fixture: FIXTURE_VERSION,
            description: self.description.clone(),
            seed: self.seed,
            identity: self.identity.clone(),
            timing: self.timing.to_json(),
            auto: self.auto,
            end_ms: self.end_ms,
        };
        // A struct of strings, numbers and JSON values always serialises.
        serde_json::to_string(&raw).expect("BUG: fixture header serialises")
    }
}

/// One line after the header.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// An input for the device.
    Input(Input),
    /// The folder changed but no notification reached the device (a lost FSEvent, or
    /// the folder as it was before the device started): only the replayer's model of
    /// the folder changes, so only a rescan can see it.
    Folder { at: Moment, file: FileObservation },
}

impl Step {
    pub fn at(&self) -> Moment {
        match self {
            Step::Input(input) => input.at,
            Step::Folder { at, .. } => *at,
        }
    }

    /// The step as one JSON line (no newline).
    pub fn to_line(&self) -> String {
        let value = match self {
            Step::Input(input) => serde_json::json!({
                "at_ms": input.at.as_millis(),
                "wall_ms": input.wall_ms,
                "event": input.event,
            }),
            Step::Folder { at, file } => serde_json::json!({
                "at_ms": at.as_millis(),
                "folder": file,
            }),
        };
        value.to_string()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    at_ms: u64,
    wall_ms: u64,
    event: Event,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFolder {
    at_ms: u64,
    folder: FileObservation,
}

/// A parsed fixture: a header and its steps, in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct Fixture {
    pub header: Header,
    pub steps: Vec<Step>,
}

/// Why a fixture could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read fixture {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the fixture is empty: line 1 must be a header such as {{\"fixture\": 1, ...}}")]
    Empty,
    #[error("line {line}: {what}")]
    Line { line: usize, what: String },
    #[error("the fixture has more than {FIXTURE_LINES_MAX} lines")]
    TooLong,
}

fn at_line(line: usize, what: impl Into<String>) -> FixtureError {
    FixtureError::Line {
        line,
        what: what.into(),
    }
}

impl Fixture {
    pub fn load(path: &Path) -> Result<Fixture, FixtureError> {
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Fixture::parse(&text)
    }

    /// Parses a fixture. Blank lines are skipped; line numbers count from 1.
    pub fn parse(text: &str) -> Result<Fixture, FixtureError> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line))
            .filter(|(_, line)| !line.trim().is_empty());
        let (header_line, header_text) = lines.next().ok_or(FixtureError::Empty)?;
        let header = parse_header(header_line, header_text)?;
        let mut steps = Vec::new();
        let mut last_at = Moment(0);
        for (number, line) in lines {
            if steps.len() >= FIXTURE_LINES_MAX {
                return Err(FixtureError::TooLong);
            }
            let step = parse_step(number, line)?;
            if step.at() < last_at {
                return Err(at_line(
                    number,
                    format!(
                        "at_ms {} is earlier than the line before ({}): time must not run \
                         backwards",
                        step.at().as_millis(),
                        last_at.as_millis()
                    ),
                ));
            }
            last_at = step.at();
            steps.push(step);
        }
        Ok(Fixture { header, steps })
    }

    /// The whole fixture as JSON Lines, newline-terminated.
    pub fn to_text(&self) -> String {
        let mut text = self.header.to_line();
        text.push('\n');
        for step in &self.steps {
            text.push_str(&step.to_line());
            text.push('\n');
        }
        text
    }

    /// Where the replay ends: the header's `end_ms`, or the last step.
    pub fn end(&self) -> Moment {
        let last = self.steps.last().map_or(Moment(0), Step::at);
        self.header.end_ms.map_or(last, Moment).max(last)
    }
}

fn parse_header(number: usize, line: &str) -> Result<Header, FixtureError> {
    let raw: RawHeader = serde_json::from_str(line)
        .map_err(|error| at_line(number, format!("not a fixture header: {error}")))?;
    if raw.fixture != FIXTURE_VERSION {
        return Err(at_line(
            number,
            format!(
                "fixture format {} is not supported (this build reads {FIXTURE_VERSION})",
                raw.fixture
            ),
        ));
    }
    let timing = TimingSpec::from_json(&raw.timing).map_err(|what| at_line(number, what))?;
    Ok(Header {
        description: raw.description,
        seed: raw.seed,
        identity: raw.identity,
        timing,
        auto: raw.auto,
        end_ms: raw.end_ms,
    })
}

fn parse_step(number: usize, line: &str) -> Result<Step, FixtureError> {
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|error| at_line(number, format!("not valid JSON: {error}")))?;
    if value.get("event").is_some() {
        let raw: RawInput = serde_json::from_value(value)
            .map_err(|error| at_line(number, format!("bad input line: {error}")))?;
        return Ok(Step::Input(Input {
            at: Moment(raw.at_ms),
            wall_ms: raw.wall_ms,
            event: raw.event,
        }));
    }
    if value.get("folder").is_some() {
        let raw: RawFolder = serde_json::from_value(value)
            .map_err(|error| at_line(number, format!("bad folder line: {error}")))?;
        return Ok(Step::Folder {
            at: Moment(raw.at_ms),
            file: raw.folder,
        });
    }
    Err(at_line(
        number,
        "a line needs either \"event\" (an input) or \"folder\" (an unnoticed change)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = r#"{"fixture":1,"seed":7,"identity":{"device_id":"h:/p","hostname":"h","project_dir":"/p","pid":1,"instance":"i","install_id":"x"}}"#;

    fn error_of(text: &str) -> String {
        Fixture::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn round_trips() {
        let text = format!(
            "{HEADER}\n{}\n{}\n",
            r#"{"at_ms":0,"folder":{"name":"a.json","state":"gone"}}"#,
            r#"{"at_ms":5,"wall_ms":9,"event":{"kind":"start"}}"#
        );
        let fixture = Fixture::parse(&text).unwrap();
        assert_eq!(fixture.header.timing, TimingSpec::Default);
        assert_eq!(fixture.steps.len(), 2);
        assert_eq!(fixture.end(), Moment(5));
        assert_eq!(Fixture::parse(&fixture.to_text()).unwrap(), fixture);
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(error_of("").contains("empty"));
        assert!(error_of("{}").starts_with("line 1: not a fixture header"));
        let bad_json = format!("{HEADER}\n\n{{\"at_ms\": 1,");
        assert!(error_of(&bad_json).starts_with("line 3: not valid JSON"));
        let bad_event =
            format!("{HEADER}\n{{\"at_ms\":1,\"wall_ms\":1,\"event\":{{\"kind\":\"fly\"}}}}");
        let message = error_of(&bad_event);
        assert!(message.starts_with("line 2: bad input line") && message.contains("fly"));
        let backwards = format!(
            "{HEADER}\n{}\n{}",
            r#"{"at_ms":9,"wall_ms":1,"event":{"kind":"tick"}}"#,
            r#"{"at_ms":3,"wall_ms":1,"event":{"kind":"tick"}}"#
        );
        assert!(error_of(&backwards).starts_with("line 3: at_ms 3 is earlier"));
        assert!(error_of(&format!("{HEADER}\n{{\"at_ms\":1}}")).contains("either"));
        let scaled = HEADER.replace("}}", "},\"timing\":{\"scale\":-1}}");
        assert!(error_of(&scaled).contains("positive"));
    }
}
