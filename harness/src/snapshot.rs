//! Reviewed transcripts on disk: `snapshots/<target>/<fixture>.snap`, in
//! insta's file format so `cargo insta review` works on them.
//!
//! A real frontend's snapshots are those of the pinned vLLM release
//! ([`crate::vllm::DEFAULT_VERSION`]). Where another release answers
//! otherwise, its snapshot lives in `snapshots/<target>@<release>/` and is
//! used for that release only; every fixture without one there uses the
//! pinned release's. A change accepted for another release goes there too.
//!
//! The text is meant to be read: status, the headers that matter, one event
//! per line as compact sorted JSON, what the engine was asked (one line per
//! engine request), then the lexical notes and key order.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::normalize::{Body, EventData, Transcript};
use crate::stream_summary::StreamSummary;

/// The file insta's assertions in `harness/tests/snapshots.rs` would name.
pub const SNAPSHOT_SOURCE: &str = "harness/tests/snapshots.rs";

/// Renders a transcript as snapshot text. When chunk boundaries are not
/// comparable (see `Fixture::chunks_comparable`), a stream is rendered as
/// what it amounts to, so the snapshot does not depend on timing.
pub fn render(
    fixture: &str,
    description: &str,
    transcript: &Transcript,
    chunks_comparable: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "fixture: {fixture}");
    if !description.is_empty() {
        let _ = writeln!(out, "about: {description}");
    }
    match transcript.status {
        Some(s) => {
            let _ = writeln!(out, "status: {s}");
        }
        None => out.push_str("status: (no response)\n"),
    }
    for (name, value) in &transcript.headers {
        let _ = writeln!(out, "header {name}: {value}");
    }
    match &transcript.body {
        Body::Empty => out.push_str("body: (empty)\n"),
        Body::Json(v) => {
            let _ = writeln!(out, "body: {v}");
        }
        Body::Text(t) => {
            let _ = writeln!(out, "body (text): {t:?}");
        }
        Body::Events(events) if !chunks_comparable => {
            out.push_str("stream (chunk boundaries not compared):\n");
            let summary = StreamSummary::of(events);
            for (index, tokens) in &summary.tokens {
                let tokens = serde_json::Value::from(tokens.clone());
                let _ = writeln!(out, "  choice {index} tokens: {tokens}");
            }
            for (index, text) in &summary.text {
                let _ = writeln!(out, "  choice {index} text: {text:?}");
            }
            for (index, roles) in &summary.roles {
                let roles = serde_json::Value::from(roles.clone());
                let _ = writeln!(out, "  choice {index} roles: {roles}");
            }
            for (index, reason) in &summary.finish_reasons {
                let _ = writeln!(out, "  choice {index} finish: {reason}");
            }
            if let Some(usage) = &summary.usage {
                let _ = writeln!(out, "  usage: {usage}");
            }
            for error in &summary.errors {
                let _ = writeln!(out, "  error: {error}");
            }
            let _ = writeln!(out, "  [DONE] events: {}", summary.done_events);
        }
        Body::Events(events) => {
            for event in events {
                match event {
                    EventData::Json(v) => {
                        let _ = writeln!(out, "event: {v}");
                    }
                    EventData::Done => out.push_str("event: [DONE]\n"),
                    EventData::Text(t) => {
                        let _ = writeln!(out, "event (text): {t:?}");
                    }
                }
            }
        }
    }
    match transcript.engine.as_deref() {
        None => {}
        Some([]) => out.push_str("engine: (no request for the fixture's prompt)\n"),
        Some(views) => {
            for view in views {
                let _ = writeln!(out, "engine: {view}");
            }
        }
    }
    for note in &transcript.notes {
        let _ = writeln!(out, "note: {note}");
    }
    for line in &transcript.key_order {
        let _ = writeln!(out, "key order {line}");
    }
    if let Some(e) = &transcript.error {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

/// Where one target's snapshots live.
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
    /// `<target>@<release>/`: a release's own snapshots, read first and
    /// written instead of `dir` (none for the pinned release).
    pub release: Option<PathBuf>,
}

/// How a fresh transcript compares with the reviewed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "diff")]
pub enum Status {
    Unchanged,
    /// No reviewed snapshot yet; a pending one was written.
    New,
    /// Differs from the reviewed one; the unified diff, and a pending one was written.
    Changed(String),
    /// Written as reviewed because the user asked (`--accept`).
    Accepted,
}

impl Store {
    pub fn new(root: &Path, target: &str) -> Self {
        Self {
            dir: root.join(target),
            release: None,
        }
    }

    /// The store of a real frontend run against vLLM `release`.
    pub fn for_release(root: &Path, target: &str, release: &str) -> Self {
        Self {
            release: (release != crate::vllm::DEFAULT_VERSION)
                .then(|| root.join(format!("{target}@{release}"))),
            ..Self::new(root, target)
        }
    }

    /// The reviewed snapshot of `fixture`: the release's own when it has one.
    pub fn path(&self, fixture: &str) -> PathBuf {
        let name = format!("{fixture}.snap");
        match &self.release {
            Some(dir) if dir.join(&name).is_file() => dir.join(name),
            _ => self.dir.join(name),
        }
    }

    /// Where a new or accepted snapshot is written.
    fn write_dir(&self) -> &Path {
        self.release.as_deref().unwrap_or(&self.dir)
    }

    fn pending_path(&self, fixture: &str) -> PathBuf {
        self.write_dir().join(format!("{fixture}.snap.new"))
    }

    /// The reviewed text, if there is one.
    pub fn read(&self, fixture: &str) -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(self.path(fixture)) {
            Ok(text) => Ok(Some(contents(&text).to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Compares `text` with the reviewed snapshot. A new or changed one is
    /// written beside it as `.snap.new` for `cargo insta review`, or over it
    /// when `accept`.
    pub fn check(&self, fixture: &str, text: &str, accept: bool) -> std::io::Result<Status> {
        let reviewed = self.read(fixture)?;
        if reviewed.as_deref().map(str::trim_end) == Some(text.trim_end()) {
            let _ = std::fs::remove_file(self.pending_path(fixture));
            return Ok(Status::Unchanged);
        }
        std::fs::create_dir_all(self.write_dir())?;
        if accept {
            let reviewed = self.write_dir().join(format!("{fixture}.snap"));
            std::fs::write(reviewed, file_text(text))?;
            let _ = std::fs::remove_file(self.pending_path(fixture));
            return Ok(Status::Accepted);
        }
        std::fs::write(self.pending_path(fixture), file_text(text))?;
        Ok(match reviewed {
            None => Status::New,
            Some(old) => {
                Status::Changed(crate::diff::render_text_diff("reviewed", &old, "now", text))
            }
        })
    }
}

/// Whether a paced stream's snapshot `now` differs from the `reviewed` one
/// only in where its chunks begin, with fewer chunks: every line that is
/// not an event is the same, and the events amount to the same stream
/// (tokens, text and roles per choice, finishes, the last usage, errors,
/// `[DONE]`). That is what a frontend that merges the engine steps it finds
/// queued (Python) does to 20 ms-paced steps when the machine is loaded: a
/// race, which a snapshot must not pin.
///
/// Merged chunks can also take an event shape away: a chunk Python writes
/// without `system_fingerprint` may be merged into one with it, and its
/// `key order event<chunk>` line is gone. So `now` may lack key-order lines
/// of events the reviewed one has, for a paced stream with fewer chunks and
/// for an unpaced one (chunk boundaries not compared) alike; nothing else
/// may differ.
///
/// ```
/// use harness::snapshot::merged_chunks_only;
/// let reviewed = "status: 200\nevent: {\"choices\":[{\"index\":0,\"token_ids\":[1]}]}\n\
///                 event: {\"choices\":[{\"index\":0,\"token_ids\":[2],\"finish_reason\":\"stop\"}]}\n\
///                 event: [DONE]\n";
/// let merged = "status: 200\nevent: {\"choices\":[{\"index\":0,\"token_ids\":[1,2],\"finish_reason\":\"stop\"}]}\n\
///               event: [DONE]\n";
/// assert!(merged_chunks_only(reviewed, merged));
/// assert!(!merged_chunks_only(merged, reviewed), "a split is not a merge");
/// let other = merged.replace("[1,2]", "[1,3]");
/// assert!(!merged_chunks_only(reviewed, &other));
///
/// let unpaced = "stream (chunk boundaries not compared):\n  choice 0 text: \"a\"\n\
///                key order event<chunk>: id, choices\nkey order event<chunk>: id, choices, system_fingerprint\n";
/// let one_shape = unpaced.replace("key order event<chunk>: id, choices\n", "");
/// assert!(merged_chunks_only(unpaced, &one_shape));
/// assert!(!merged_chunks_only(&one_shape, unpaced), "a shape that appears is not a merge");
/// assert!(!merged_chunks_only(unpaced, &one_shape.replace("\"a\"", "\"b\"")));
/// ```
pub fn merged_chunks_only(reviewed: &str, now: &str) -> bool {
    let split = |text: &str| {
        let mut events = Vec::new();
        let mut rest = Vec::new();
        for line in text.trim_end().lines() {
            match line.strip_prefix("event: ") {
                Some(data) => events.push(EventData::parse(data)),
                None => rest.push(line.to_string()),
            }
        }
        (events, rest)
    };
    let ((a, a_rest), (b, b_rest)) = (split(reviewed), split(now));
    let shapes_lost: Vec<&String> = a_rest.iter().filter(|l| !b_rest.contains(l)).collect();
    let only_shapes_lost = b_rest.iter().all(|l| a_rest.contains(l))
        && shapes_lost
            .iter()
            .all(|l| l.starts_with("key order event<"));
    if !only_shapes_lost {
        return false;
    }
    if a.is_empty() && b.is_empty() {
        // Unpaced: the summary lines are equal; some shapes are gone.
        return !shapes_lost.is_empty();
    }
    if b.len() >= a.len() {
        return false;
    }
    let (mut x, mut y) = (StreamSummary::of(&a), StreamSummary::of(&b));
    x.chunks = 0;
    y.chunks = 0;
    x == y
}

/// The text of a `.snap` file: insta's metadata header, then the contents.
pub fn file_text(contents: &str) -> String {
    format!(
        "---\nsource: {SNAPSHOT_SOURCE}\nexpression: transcript\n---\n{}\n",
        contents.trim_end()
    )
}

/// The contents of a `.snap` file, without insta's metadata header.
pub fn contents(file: &str) -> &str {
    let Some(rest) = file.strip_prefix("---\n") else {
        return file;
    };
    match rest.find("\n---\n") {
        Some(end) => &rest[end + 5..],
        None => file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_writes_pending_then_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "reference");
        assert_eq!(store.check("a", "one\n", false).unwrap(), Status::New);
        assert!(dir.path().join("reference/a.snap.new").exists());
        assert_eq!(store.check("a", "one\n", true).unwrap(), Status::Accepted);
        assert!(!dir.path().join("reference/a.snap.new").exists());
        assert_eq!(store.check("a", "one", false).unwrap(), Status::Unchanged);
        let Status::Changed(diff) = store.check("a", "two\n", false).unwrap() else {
            panic!()
        };
        assert!(diff.contains("-one") && diff.contains("+two"), "{diff}");
    }

    #[test]
    fn a_release_reads_its_own_snapshot_first_and_writes_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = Store::new(dir.path(), "vllm-rs");
        assert_eq!(pinned.check("a", "one", true).unwrap(), Status::Accepted);
        let pinned_again = Store::for_release(dir.path(), "vllm-rs", crate::vllm::DEFAULT_VERSION);
        assert!(
            pinned_again.release.is_none(),
            "the pinned release has no folder"
        );
        let old = Store::for_release(dir.path(), "vllm-rs", "0.30.0");
        assert_eq!(old.check("a", "one", false).unwrap(), Status::Unchanged);
        assert!(matches!(
            old.check("a", "two", false).unwrap(),
            Status::Changed(_)
        ));
        assert!(dir.path().join("vllm-rs@0.30.0/a.snap.new").exists());
        assert!(!dir.path().join("vllm-rs/a.snap.new").exists());
        assert_eq!(old.check("a", "two", true).unwrap(), Status::Accepted);
        assert_eq!(old.path("a"), dir.path().join("vllm-rs@0.30.0/a.snap"));
        assert_eq!(old.check("a", "two", false).unwrap(), Status::Unchanged);
        assert_eq!(pinned.check("a", "one", false).unwrap(), Status::Unchanged);
    }

    #[test]
    fn contents_strip_the_insta_header() {
        assert_eq!(contents(&file_text("a\nb")), "a\nb\n");
        assert_eq!(contents("no header"), "no header");
    }
}
