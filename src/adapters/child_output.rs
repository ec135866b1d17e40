//! The child's output, passed on into baton's log: read from a pipe, cut into lines,
//! scrubbed of secrets, and logged under the target `mirror_baton::child`, so a reader of
//! baton's log knows which lines are the child's (`stream` says stdout or stderr).
//!
//! Why scrub: under launchd baton's stderr is a log file, and the mirror prints what it
//! was given — the upstream mirror logs the updates URL with the gateway's credentials,
//! the utensil fork its whole environment, token included. Every exact secret value
//! baton knows (the token, the gateway's URL, password and Basic credentials, the send
//! URL) is replaced by `***` with [`Secret::scrub`].
//!
//! Owns: draining one pipe continuously (the child must never block on a full pipe, so
//! the reader never waits on anything but the pipe and the log); lines bounded to
//! [`LINE_BYTES_MAX`] (the rest of a longer line is dropped, and said so); a last line
//! without a newline (a child killed mid-line) passed on at end of file; bytes that are
//! not UTF-8 shown as U+FFFD and control characters escaped, so binary output cannot
//! corrupt the log or a terminal.
//!
//! Must never: pass on any part of a secret — a line cut at the bound, or ended by end
//! of file, loses a tail that could begin a secret ([`Scrubber::render`]) — or hold more
//! than one bounded line per stream in memory.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::telegram_config::Secret;

/// A longer line is cut here; the rest of it is dropped.
pub const LINE_BYTES_MAX: usize = 8 * 1024;
/// Bytes read from the pipe at a time.
const CHUNK_BYTES: usize = 4096;

/// One line of output, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub bytes: Vec<u8>,
    /// The line went on past [`LINE_BYTES_MAX`]; the rest was dropped.
    pub cut: bool,
    /// It ended at end of file, without a newline.
    pub unterminated: bool,
}

/// Cuts a byte stream into bounded lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// Inside an over-long line, dropping bytes until its newline.
    dropping: bool,
}

impl LineSplitter {
    /// Takes the next chunk and returns the lines it completed (or cut).
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|b| *b == b'\n');
            let (piece, rest, ends_line) = match newline {
                Some(at) => (&chunk[..at], &chunk[at + 1..], true),
                None => (chunk, &[][..], false),
            };
            chunk = rest;
            if self.dropping {
                self.dropping = !ends_line;
                continue;
            }
            let room = LINE_BYTES_MAX - self.partial.len();
            if piece.len() > room || (piece.len() == room && !ends_line) {
                self.partial.extend_from_slice(&piece[..room]);
                lines.push(Line {
                    bytes: std::mem::take(&mut self.partial),
                    cut: true,
                    unterminated: false,
                });
                self.dropping = !ends_line;
                continue;
            }
            self.partial.extend_from_slice(piece);
            if ends_line {
                lines.push(Line {
                    bytes: std::mem::take(&mut self.partial),
                    cut: false,
                    unterminated: false,
                });
            }
        }
        lines
    }

    /// At end of file: what was left without a newline, if anything.
    pub fn finish(&mut self) -> Option<Line> {
        self.dropping = false;
        (!self.partial.is_empty()).then(|| Line {
            bytes: std::mem::take(&mut self.partial),
            cut: false,
            unterminated: true,
        })
    }
}

/// Renders lines for the log with every known secret removed.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    /// Longest first, so a URL that contains the token is replaced whole.
    secrets: Vec<Secret>,
}

impl Scrubber {
    pub fn new(secrets: &[Secret]) -> Scrubber {
        let mut secrets: Vec<Secret> = secrets
            .iter()
            .filter(|s| !s.expose().is_empty())
            .cloned()
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.expose().len()));
        secrets.dedup();
        Scrubber { secrets }
    }

    /// The line as text for the log: lossy UTF-8, secrets replaced by `***`, a tail that
    /// could begin a secret dropped when the line did not end normally (cut at the bound
    /// or by end of file: the rest of that secret never reaches the log), a trailing CR
    /// removed, control characters escaped.
    pub fn render(&self, line: &Line) -> String {
        let text = String::from_utf8_lossy(&line.bytes);
        let mut text = self
            .secrets
            .iter()
            .fold(text.into_owned(), |text, secret| secret.scrub(&text));
        if line.cut || line.unterminated {
            let keep = text.len() - self.secret_prefix_at_end(&text);
            text.truncate(keep);
        }
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let mut shown = String::with_capacity(text.len() + 16);
        for c in text.chars() {
            if c.is_control() && c != '\t' {
                shown.extend(c.escape_default());
            } else {
                shown.push(c);
            }
        }
        if line.cut {
            shown.push_str(&format!(" [… line cut at {LINE_BYTES_MAX} bytes]"));
        }
        if line.unterminated {
            shown.push_str(" [no newline at end]");
        }
        shown
    }

    /// The length of the longest tail of `text` that is a proper prefix of a secret.
    fn secret_prefix_at_end(&self, text: &str) -> usize {
        self.secrets
            .iter()
            .filter_map(|secret| {
                let secret = secret.expose();
                (1..secret.len())
                    .rev()
                    .find(|&n| secret.get(..n).is_some_and(|head| text.ends_with(head)))
            })
            .max()
            .unwrap_or(0)
    }
}

/// Reads `pipe` to its end, logging each line; `stream` is `stdout` or `stderr`.
///
/// Spawn one per stream and child run: it ends when every writer has closed the pipe.
pub async fn pass_on(
    mut pipe: impl AsyncRead + Unpin,
    stream: &'static str,
    scrubber: Arc<Scrubber>,
) {
    let mut splitter = LineSplitter::default();
    let mut chunk = vec![0u8; CHUNK_BYTES];
    loop {
        let read = match pipe.read(&mut chunk).await {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::debug!(%error, stream, "cannot read the child's output any more");
                break;
            }
        };
        for line in splitter.push(&chunk[..read]) {
            log_line(&scrubber, &line, stream);
        }
    }
    if let Some(line) = splitter.finish() {
        log_line(&scrubber, &line, stream);
    }
}

fn log_line(scrubber: &Scrubber, line: &Line, stream: &'static str) {
    let text = scrubber.render(line);
    tracing::info!(target: "mirror_baton::child", stream, "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
            .collect()
    }

    #[test]
    fn lines_split_across_chunks_and_a_last_one_without_newline() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.push(b"hel").is_empty());
        let lines = splitter.push(b"lo\nwor");
        assert_eq!(texts(&lines), ["hello"]);
        assert_eq!(texts(&splitter.push(b"ld\n\n")), ["world", ""]);
        assert!(splitter.push(b"killed mid-li").is_empty());
        let last = splitter.finish().expect("the partial line");
        assert!(last.unterminated);
        assert_eq!(last.bytes, b"killed mid-li");
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_dropped_up_to_the_newline() {
        let mut splitter = LineSplitter::default();
        let mut lines = splitter.push(&vec![b'a'; LINE_BYTES_MAX - 1]);
        lines.extend(splitter.push(&vec![b'b'; 3 * LINE_BYTES_MAX]));
        lines.extend(splitter.push(b"bbb\nnext\n"));
        assert_eq!(lines.len(), 2);
        assert!(lines[0].cut);
        assert_eq!(lines[0].bytes.len(), LINE_BYTES_MAX);
        assert_eq!(texts(&lines[1..]), ["next"]);
        let exact = splitter.push(&[vec![b'c'; LINE_BYTES_MAX], b"\n".to_vec()].concat());
        assert_eq!(exact.len(), 1);
        assert!(!exact[0].cut, "a line of exactly the bound is whole");
    }

    #[test]
    fn secrets_are_scrubbed_even_when_a_cut_or_the_end_splits_them() {
        let token = "123456:AAE-secret_token";
        let url = "http://baton:pw9x@127.0.0.1:4000/updates";
        let scrubber = Scrubber::new(&[Secret::new(token), Secret::new(url)]);
        let line = |text: &str, cut: bool, unterminated: bool| Line {
            bytes: text.as_bytes().to_vec(),
            cut,
            unterminated,
        };
        let shown = scrubber.render(&line(&format!("env {token} url {url}"), false, false));
        assert_eq!(shown, "env *** url ***");
        // The bound fell inside the token: its head is dropped, the rest never comes.
        let shown = scrubber.render(&line("TELEGRAM_BOT_TOKEN=123456:AA", true, false));
        assert!(
            shown.starts_with("TELEGRAM_BOT_TOKEN=") && !shown.contains("1234"),
            "{shown}"
        );
        let shown = scrubber.render(&line("fetching http://baton:pw", false, true));
        assert!(!shown.contains("pw"), "{shown}");
        // Binary and control characters are escaped, CRLF tolerated.
        let shown = scrubber.render(&line("a\u{1b}[31mred\u{7}\t\r", false, false));
        assert_eq!(shown, "a\\u{1b}[31mred\\u{7}\t");
        let bytes = Line {
            bytes: vec![0xff, b'o', b'k'],
            cut: false,
            unterminated: false,
        };
        assert_eq!(scrubber.render(&bytes), "\u{fffd}ok");
    }
}
