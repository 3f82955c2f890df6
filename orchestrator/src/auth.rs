//! API keys: bearer tokens in gRPC metadata (`authorization: Bearer <key>`),
//! from `RLM_API_KEYS` and/or a file (`RLM_API_KEYS_FILE`) reloaded when it
//! changes. Keys are kept only as SHA-256 digests and compared in constant
//! time; logs and errors name a key by its label, never by its value.
//!
//! Key list format (file lines or comma-separated env entries): `label:key`
//! or a bare `key` (labelled `key-N`); blank lines and `#` comments are
//! skipped. A key has at least [`MIN_KEY_BYTES`] bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Status};

pub const MIN_KEY_BYTES: usize = 16;

/// How often the key file is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read the API key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}, entry {entry}: {reason}")]
    Invalid {
        origin: String,
        entry: usize,
        reason: String,
    },
}

/// Who called: the label of the key used. Put in the request extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub label: String,
    running: Arc<Semaphore>,
}

impl Caller {
    /// Takes one of this key's completion slots, or says why not.
    pub fn acquire(&self, max: u32) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.running).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "API key {:?} already runs {max} completions (RLM_API_KEY_MAX_CONCURRENT); retry later",
                self.label
            ))
        })
    }
}

struct Key {
    label: String,
    digest: [u8; 32],
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
    /// Modification time and size of the file the set came from.
    file_stamp: Option<(SystemTime, u64)>,
}

/// The configured keys; `None` keys configured = authentication off.
pub struct ApiKeys {
    inline: Vec<Key>,
    file: Option<PathBuf>,
    set: RwLock<KeySet>,
    max_concurrent: u32,
    running: RwLock<HashMap<String, Arc<Semaphore>>>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn parse(text: &str, origin: &str, separator: char) -> Result<Vec<Key>, KeysError> {
    let mut keys = Vec::new();
    for (i, raw) in text.split(separator).enumerate() {
        let entry = raw.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let (label, key) = match entry.split_once(':') {
            Some((label, key)) => (label.trim().to_owned(), key.trim()),
            None => (format!("key-{}", i + 1), entry),
        };
        let invalid = |reason: &str| KeysError::Invalid {
            origin: origin.to_owned(),
            entry: i + 1,
            reason: reason.to_owned(),
        };
        if key.len() < MIN_KEY_BYTES {
            return Err(invalid(&format!(
                "keys need at least {MIN_KEY_BYTES} bytes"
            )));
        }
        if label.is_empty() || label.len() > 64 {
            return Err(invalid("labels are 1-64 bytes"));
        }
        if keys.iter().any(|k: &Key| k.label == label) {
            return Err(invalid(&format!("label {label:?} is used twice")));
        }
        keys.push(Key {
            label,
            digest: digest(key),
        });
    }
    Ok(keys)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_file(path: &Path) -> Result<KeySet, KeysError> {
    let file_stamp = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(KeySet {
        keys: parse(&text, &path.display().to_string(), '\n')?,
        file_stamp,
    })
}

impl ApiKeys {
    /// `inline` is `RLM_API_KEYS`; `file` is `RLM_API_KEYS_FILE`. Returns
    /// `None` when neither is set (authentication off).
    pub fn load(
        inline: Option<&str>,
        file: Option<&Path>,
        max_concurrent: u32,
    ) -> Result<Option<Arc<Self>>, KeysError> {
        if inline.is_none() && file.is_none() {
            return Ok(None);
        }
        let inline = match inline {
            Some(text) => parse(text, "RLM_API_KEYS", ',')?,
            None => Vec::new(),
        };
        let set = match file {
            Some(path) => read_file(path)?,
            None => KeySet::default(),
        };
        Ok(Some(Arc::new(Self {
            inline,
            file: file.map(Path::to_path_buf),
            set: RwLock::new(set),
            max_concurrent,
            running: RwLock::default(),
        })))
    }

    pub fn max_concurrent(&self) -> u32 {
        self.max_concurrent
    }

    /// Re-reads the key file when its modification time or size changed. A
    /// file that no longer parses keeps the previous keys (and is logged).
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.file else { return };
        let now = stamp(path);
        if now
            == self
                .set
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .file_stamp
        {
            return;
        }
        match read_file(path) {
            Ok(set) => {
                tracing::info!(file = %path.display(), keys = set.keys.len(), "API keys reloaded");
                *self.set.write().unwrap_or_else(|p| p.into_inner()) = set;
            }
            Err(error) => {
                tracing::error!(%error, "API key file not reloaded; the previous keys stay in force");
                // Do not retry the same broken content every second.
                self.set
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .file_stamp = now;
            }
        }
    }

    /// Watches the key file until the process ends.
    pub fn spawn_reloader(self: &Arc<Self>) {
        if self.file.is_none() {
            return;
        }
        let keys = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            loop {
                tick.tick().await;
                let keys = Arc::clone(&keys);
                let _ = tokio::task::spawn_blocking(move || keys.reload_if_changed()).await;
            }
        });
    }

    /// The label of the key `token` matches. Every key is compared (no early
    /// exit), each comparison in constant time.
    fn label_of(&self, token: &str) -> Option<String> {
        let wanted = digest(token);
        let set = self.set.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for key in self.inline.iter().chain(set.keys.iter()) {
            let diff = key
                .digest
                .iter()
                .zip(wanted.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(key.label.clone());
            }
        }
        found
    }

    fn caller(&self, label: String) -> Caller {
        if let Some(running) = self
            .running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&label)
        {
            return Caller {
                label,
                running: Arc::clone(running),
            };
        }
        let mut map = self.running.write().unwrap_or_else(|p| p.into_inner());
        let running = map
            .entry(label.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_concurrent as usize)));
        Caller {
            label,
            running: Arc::clone(running),
        }
    }

    /// Checks the request's bearer token; on success the [`Caller`] is put
    /// in the request's extensions.
    pub fn authenticate<T>(&self, mut request: Request<T>) -> Result<Request<T>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated("missing `authorization: Bearer <API key>` metadata")
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be `Bearer <API key>`")
            })?;
        let label = self
            .label_of(token)
            .ok_or_else(|| Status::unauthenticated("invalid API key"))?;
        let caller = self.caller(label);
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbb";

    fn with_auth(value: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert("authorization", value.parse().expect("ascii"));
        r
    }

    #[test]
    fn parses_labels_and_rejects_short_keys() {
        let keys = parse(&format!("# comment\nalice:{A}\n\n{B}\n"), "f", '\n').expect("valid");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].label, "alice");
        assert_eq!(keys[1].label, "key-4");
        let err = parse("bob:short", "f", '\n').err().expect("too short");
        assert!(err.to_string().contains("at least 16"), "{err}");
        assert!(
            !err.to_string().contains("short"),
            "the key must not be echoed: {err}"
        );
        assert!(
            parse(&format!("x:{A},x:{B}"), "env", ',').is_err(),
            "duplicate label"
        );
    }

    #[test]
    fn authenticates_bearer_tokens() {
        let keys = ApiKeys::load(Some(&format!("alice:{A}")), None, 2)
            .expect("load")
            .expect("on");
        let ok = keys
            .authenticate(with_auth(&format!("Bearer {A}")))
            .expect("valid key");
        assert_eq!(
            ok.extensions().get::<Caller>().expect("caller").label,
            "alice"
        );
        for bad in [format!("Bearer {B}"), A.to_owned(), "Bearer ".to_owned()] {
            let status = keys.authenticate(with_auth(&bad)).expect_err("rejected");
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(!status.message().contains(A) && !status.message().contains(B));
        }
        let status = keys.authenticate(Request::new(())).expect_err("no header");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn concurrency_is_per_key() {
        let keys = ApiKeys::load(Some(&format!("alice:{A},bob:{B}")), None, 1)
            .expect("load")
            .expect("on");
        let caller = |k: &str| {
            keys.authenticate(with_auth(&format!("Bearer {k}")))
                .expect("valid")
                .extensions()
                .get::<Caller>()
                .cloned()
                .expect("caller")
        };
        let first = caller(A).acquire(1).expect("first slot");
        assert_eq!(
            caller(A).acquire(1).expect_err("full").code(),
            tonic::Code::ResourceExhausted
        );
        let _other = caller(B).acquire(1).expect("another key has its own slots");
        drop(first);
        let _again = caller(A).acquire(1).expect("slot freed");
    }

    #[test]
    fn file_reload_keeps_old_keys_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("alice:{A}\n")).expect("write");
        let keys = ApiKeys::load(None, Some(&path), 1)
            .expect("load")
            .expect("on");
        assert!(keys.label_of(A).is_some());
        std::fs::write(&path, format!("bob:{B}\nanother-long-key-123\n")).expect("rewrite");
        keys.reload_if_changed();
        assert_eq!(keys.label_of(B).as_deref(), Some("bob"));
        assert!(keys.label_of(A).is_none(), "the old key is revoked");
        std::fs::write(&path, "broken:short\n").expect("break");
        keys.reload_if_changed();
        assert_eq!(
            keys.label_of(B).as_deref(),
            Some("bob"),
            "kept after a bad reload"
        );
    }
}
