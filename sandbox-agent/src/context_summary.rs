//! What a stored context holds, measured once per content by the agent:
//! its length in characters and first characters as the REPL decodes it
//! (UTF-8, invalid sequences replaced), and the top level of a JSON array or
//! object. Callers describe contexts to a model from this instead of running
//! code in the session first.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Characters of preview, as the REPL's `context[:200]`.
pub const PREVIEW_CHARS: usize = 200;
/// Bytes that always hold the first [`PREVIEW_CHARS`] characters whole
/// (a character, or a replaced invalid sequence, is at most 4 bytes).
const PREVIEW_BYTES: usize = PREVIEW_CHARS * 4;
const READ_CHUNK: usize = 1 << 20;
/// Summaries kept; the cache is emptied when it is full (they are cheap to
/// recompute, and a long-lived agent must not grow without bound).
const CACHE_ENTRIES: usize = 4096;

/// The text of a context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextSummary {
    pub chars: u64,
    pub preview: String,
}

/// The top level of a JSON context: `"list"` or `"dict"`, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonShape {
    pub kind: &'static str,
    pub items: u64,
}

/// Counts the characters of UTF-8 text read in pieces, as a lossy decoder
/// sees them: each maximal invalid subpart is one U+FFFD, which is what
/// Rust's `from_utf8` reports (`error_len`) and Python's "replace" produces.
#[derive(Default)]
struct CharCounter {
    chars: u64,
    /// The start of a sequence cut by the end of the previous piece.
    carry: Vec<u8>,
}

impl CharCounter {
    fn feed(&mut self, piece: &[u8]) {
        let joined;
        let mut bytes = if self.carry.is_empty() {
            piece
        } else {
            self.carry.extend_from_slice(piece);
            joined = std::mem::take(&mut self.carry);
            &joined[..]
        };
        loop {
            match std::str::from_utf8(bytes) {
                Ok(text) => {
                    self.chars += text.chars().count() as u64;
                    return;
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    // The prefix is valid: from_utf8 said so.
                    self.chars += std::str::from_utf8(&bytes[..valid])
                        .map_or(0, |t| t.chars().count() as u64);
                    match err.error_len() {
                        Some(len) => {
                            self.chars += 1;
                            bytes = &bytes[valid + len..];
                        }
                        // Cut by the end of the piece: decided by what follows.
                        None => {
                            self.carry = bytes[valid..].to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    fn finish(self) -> u64 {
        // A sequence cut by the end of the content is one replacement.
        self.chars + u64::from(!self.carry.is_empty())
    }
}

fn preview_of(head: &[u8]) -> String {
    String::from_utf8_lossy(head)
        .chars()
        .take(PREVIEW_CHARS)
        .collect()
}

/// Measures text fed in pieces (while it is uploaded, or read back).
#[derive(Default)]
pub struct TextMeasure {
    counter: CharCounter,
    head: Vec<u8>,
}

impl TextMeasure {
    pub fn feed(&mut self, piece: &[u8]) {
        if self.head.len() < PREVIEW_BYTES {
            let take = (PREVIEW_BYTES - self.head.len()).min(piece.len());
            self.head.extend_from_slice(&piece[..take]);
        }
        self.counter.feed(piece);
    }

    pub fn finish(self) -> TextSummary {
        TextSummary {
            chars: self.counter.finish(),
            preview: preview_of(&self.head),
        }
    }
}

/// Summarizes the text read from `reader`.
pub fn summarize_text(mut reader: impl Read) -> std::io::Result<TextSummary> {
    let mut measure = TextMeasure::default();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(measure.finish()),
            Ok(n) => measure.feed(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Counts the top level of a JSON document without building it.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = JsonShape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array or object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonShape, A::Error> {
        let mut items = 0u64;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            items += 1;
        }
        Ok(JsonShape {
            kind: "list",
            items,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonShape, A::Error> {
        // json.loads keeps the last of duplicate keys: count distinct ones.
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<IgnoredAny>()?;
            keys.insert(key);
        }
        Ok(JsonShape {
            kind: "dict",
            items: keys.len() as u64,
        })
    }
}

/// JSON contexts up to this size are read whole and parsed from memory
/// (several times faster); larger ones are streamed, so a 1 GiB context is
/// never held in the agent's memory.
const JSON_IN_MEMORY_BYTES: u64 = 64 << 20;

/// The shape of a JSON array or object; `None` for anything else, or for
/// what this parser refuses and Python might accept (NaN, Infinity, keys
/// with lone surrogates or invalid UTF-8): the caller then parses it in the
/// session, whose verdict is the one that counts.
pub fn json_shape(bytes: &[u8]) -> Option<JsonShape> {
    shape_of(serde_json::Deserializer::from_slice(bytes))
}

fn json_shape_of_file(path: &Path) -> std::io::Result<Option<JsonShape>> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() <= JSON_IN_MEMORY_BYTES {
        let mut bytes = Vec::new();
        std::io::BufReader::new(file).read_to_end(&mut bytes)?;
        return Ok(json_shape(&bytes));
    }
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    Ok(shape_of(serde_json::Deserializer::from_reader(reader)))
}

fn shape_of<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
) -> Option<JsonShape> {
    let shape = (&mut de).deserialize_any(TopLevel).ok()?;
    de.end().ok()?;
    Some(shape)
}

/// The summaries of a context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub text: TextSummary,
    /// Computed when first asked for; `Some(None)`: not describable as JSON.
    pub json: Option<Option<JsonShape>>,
}

/// Summaries by content id, computed on first use.
#[derive(Default)]
pub struct SummaryCache {
    entries: Mutex<HashMap<String, Arc<Summary>>>,
}

impl SummaryCache {
    /// The cached summary of `id`, if it has what is asked (the JSON shape
    /// when `as_json`). Never blocks on I/O.
    pub fn cached(&self, id: &str, as_json: bool) -> Option<Arc<Summary>> {
        self.lock()
            .get(id)
            .filter(|summary| !as_json || summary.json.is_some())
            .cloned()
    }

    /// The summary of the content `id` stored at `path`, with its JSON shape
    /// when `as_json`. Blocking: reads the whole file when not cached.
    pub fn summary(&self, id: &str, path: &Path, as_json: bool) -> std::io::Result<Arc<Summary>> {
        if let Some(summary) = self.cached(id, as_json) {
            return Ok(summary);
        }
        let text = match self.cached(id, false) {
            Some(summary) => summary.text.clone(),
            None => summarize_text(std::fs::File::open(path)?)?,
        };
        let json = if as_json {
            Some(json_shape_of_file(path)?)
        } else {
            None
        };
        let summary = Arc::new(Summary { text, json });
        self.insert(id, Arc::clone(&summary), true);
        Ok(summary)
    }

    /// Records the text summary of `id` measured while it was stored.
    pub fn remember_text(&self, id: &str, text: TextSummary) {
        self.insert(id, Arc::new(Summary { text, json: None }), false);
    }

    /// Inserts (or, with `replace`, updates) the summary of `id`.
    fn insert(&self, id: &str, summary: Arc<Summary>, replace: bool) {
        let mut entries = self.lock();
        if entries.len() >= CACHE_ENTRIES {
            entries.clear();
        }
        if replace || !entries.contains_key(id) {
            entries.insert(id.to_owned(), summary);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Summary>>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads in pieces of `size` bytes, to cut sequences at every offset.
    struct Pieces<'a>(&'a [u8], usize);

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn chars_in_pieces(bytes: &[u8], size: usize) -> u64 {
        summarize_text(Pieces(bytes, size)).expect("read").chars
    }

    #[test]
    fn counts_characters_as_a_lossy_decoder_does_wherever_the_pieces_end() {
        let cases: &[&[u8]] = &[
            b"",
            b"plain ascii",
            "h\u{e9}llo w\u{f6}rld \u{1f600} \u{4e2d}\u{6587}".as_bytes(),
            b"\xff\xfe bad bytes",
            b"cut at the end \xe2\x82",
            b"\xe2\x82 truncated inside, then more \xf0\x9f\x98",
            b"\xc0\xaf overlong, \xed\xa0\x80 surrogate, \xf4\x90\x80\x80 too big",
        ];
        for bytes in cases {
            let lossy = String::from_utf8_lossy(bytes).chars().count() as u64;
            for size in 1..=bytes.len().max(1) {
                assert_eq!(
                    chars_in_pieces(bytes, size),
                    lossy,
                    "{bytes:?} in pieces of {size}"
                );
            }
        }
    }

    #[test]
    fn preview_is_the_first_characters() {
        let text = "\u{e9}".repeat(500);
        let summary = summarize_text(text.as_bytes()).expect("read");
        assert_eq!(summary.chars, 500);
        assert_eq!(summary.preview, "\u{e9}".repeat(PREVIEW_CHARS));
        let short = summarize_text(&b"ab\xffc"[..]).expect("read");
        assert_eq!(short.preview, "ab\u{fffd}c");
    }

    #[test]
    fn json_shapes_of_arrays_and_objects_only() {
        assert_eq!(
            json_shape(br#" [1, "two", {"three": [3]}, null] "#),
            Some(JsonShape {
                kind: "list",
                items: 4
            })
        );
        assert_eq!(
            json_shape(br#"{"a": 1, "b": 2, "a": 3}"#),
            Some(JsonShape {
                kind: "dict",
                items: 2
            })
        );
        for refused in [
            &b"\"a string\""[..],
            b"42",
            b"[1, 2",
            b"[1] trailing",
            b"[NaN]",
            b"{\"\\ud800\": 1}",
            b"{\"\xff\": 1}",
        ] {
            assert_eq!(json_shape(refused), None, "{refused:?}");
        }
        // Nested values are skipped without recursion: no stack to overflow.
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            json_shape(deep.as_bytes()),
            Some(JsonShape {
                kind: "list",
                items: 1
            })
        );
    }

    #[test]
    fn streamed_json_gives_the_same_shapes() {
        for text in [
            &br#"[1, {"a": [2]}, "three"]"#[..],
            br#"{"k": 1, "k": 2, "j": null}"#,
            b"[NaN]",
        ] {
            let streamed = shape_of(serde_json::Deserializer::from_reader(text));
            assert_eq!(streamed, json_shape(text), "{text:?}");
        }
    }

    #[test]
    fn the_cache_adds_the_json_shape_when_first_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        std::fs::write(&path, b"[1, 2, 3]").expect("write");
        let cache = SummaryCache::default();
        let text_only = cache.summary("id", &path, false).expect("summary");
        assert_eq!((text_only.text.chars, text_only.json.clone()), (9, None));
        let with_json = cache.summary("id", &path, true).expect("summary");
        assert_eq!(
            with_json.json,
            Some(Some(JsonShape {
                kind: "list",
                items: 3
            }))
        );
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(cache.summary("id", &path, true).expect("cached"), with_json);
    }
}
