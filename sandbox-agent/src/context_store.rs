//! Content-addressed context blobs: each distinct context is stored once, read-only,
//! under `<data_dir>/contexts/sha256/<hex>`, and shared by every session that names it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::context_summary::{Summary, SummaryCache, TextMeasure, TextSummary};

#[derive(Debug, thiserror::Error)]
pub enum ContextStoreError {
    #[error("context is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("expected_sha256: upload hashed to {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("total_size_bytes: upload was {actual} bytes, not {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("context store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ContextStoreError + '_ {
    move |source| ContextStoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A stored context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredContext {
    /// `sha256:<hex>`.
    pub id: String,
    pub size: u64,
    pub already_existed: bool,
}

/// What the uploader promised on its first message; zero values mean "not given".
#[derive(Debug, Default, Clone)]
pub struct UploadExpectations {
    pub sha256_hex: String,
    pub size: u64,
}

pub struct ContextStore {
    blobs: PathBuf,
    staging: PathBuf,
    max_bytes: u64,
    summaries: SummaryCache,
}

/// Parses `sha256:<64 lowercase hex>`, returning the hex part.
pub fn parse_context_id(id: &str) -> Option<&str> {
    let hex = id.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

impl ContextStore {
    /// Opens (creating) the store under `root`. Leftover staging files from a
    /// crashed upload are removed.
    pub fn open(root: &Path, max_bytes: u64) -> Result<Self, ContextStoreError> {
        let blobs = root.join("sha256");
        let staging = root.join("staging");
        for dir in [&blobs, &staging] {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        for entry in std::fs::read_dir(&staging).map_err(io_error(&staging))? {
            let path = entry.map_err(io_error(&staging))?.path();
            let _ = std::fs::remove_file(&path);
        }
        Ok(Self {
            blobs,
            staging,
            max_bytes,
            summaries: SummaryCache::default(),
        })
    }

    /// What context `id` holds (see [`crate::context_summary`]); `None` when
    /// it is not stored. Blocking on first use of a content.
    pub fn summary(&self, id: &str, as_json: bool) -> std::io::Result<Option<Arc<Summary>>> {
        if let Some(summary) = self.summaries.cached(id, as_json) {
            return Ok(Some(summary));
        }
        match self.path_of(id) {
            Some(path) => self.summaries.summary(id, &path, as_json).map(Some),
            None => Ok(None),
        }
    }

    /// What context `id` holds, when that is already known (no I/O).
    pub fn cached_summary(&self, id: &str, as_json: bool) -> Option<Arc<Summary>> {
        self.summaries.cached(id, as_json)
    }

    /// The file holding context `id`, if stored.
    pub fn path_of(&self, id: &str) -> Option<PathBuf> {
        let path = self.blobs.join(parse_context_id(id)?);
        path.is_file().then_some(path)
    }

    /// Stores the bytes of `chunks`. An error from the source aborts the upload
    /// and stores nothing; it is returned as the outer error.
    pub async fn put<E>(
        &self,
        expect: UploadExpectations,
        mut chunks: impl Stream<Item = Result<Vec<u8>, E>> + Unpin + Send,
    ) -> Result<Result<StoredContext, ContextStoreError>, E> {
        if expect.size > self.max_bytes {
            return Ok(Err(ContextStoreError::TooLarge {
                limit: self.max_bytes,
            }));
        }
        if !expect.sha256_hex.is_empty() {
            let id = format!("sha256:{}", expect.sha256_hex);
            if let Some(path) = self.path_of(&id) {
                let size = std::fs::metadata(&path)
                    .map(|m| m.len())
                    .unwrap_or_default();
                return Ok(Ok(StoredContext {
                    id,
                    size,
                    already_existed: true,
                }));
            }
        }
        let staged = self.staging.join(format!(
            "{}-{}",
            std::process::id(),
            STAGING_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let outcome = self.write_staged(&staged, &mut chunks).await;
        let result = match outcome {
            Err(source_error) => {
                let _ = tokio::fs::remove_file(&staged).await;
                return Err(source_error);
            }
            Ok(Err(err)) => Err(err),
            Ok(Ok((digest, size, text))) => {
                let stored = self.commit(&staged, &expect, digest, size);
                if let Ok(stored) = &stored {
                    self.summaries.remember_text(&stored.id, text);
                }
                stored
            }
        };
        if result
            .as_ref()
            .map_or(true, |stored| stored.already_existed)
        {
            let _ = tokio::fs::remove_file(&staged).await;
        }
        Ok(result)
    }

    async fn write_staged<E>(
        &self,
        staged: &Path,
        chunks: &mut (impl Stream<Item = Result<Vec<u8>, E>> + Unpin + Send),
    ) -> Result<Result<(String, u64, TextSummary), ContextStoreError>, E> {
        let mut file = match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(staged)
            .await
        {
            Ok(file) => file,
            Err(err) => return Ok(Err(io_error(staged)(err))),
        };
        let mut hasher = Sha256::new();
        // Measured on the way, so the first CreateSession naming it does not
        // read it back.
        let mut text = TextMeasure::default();
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > self.max_bytes {
                return Ok(Err(ContextStoreError::TooLarge {
                    limit: self.max_bytes,
                }));
            }
            hasher.update(&chunk);
            text.feed(&chunk);
            if let Err(err) = file.write_all(&chunk).await {
                return Ok(Err(io_error(staged)(err)));
            }
        }
        if let Err(err) = file.flush().await {
            return Ok(Err(io_error(staged)(err)));
        }
        Ok(Ok((hex::encode(hasher.finalize()), size, text.finish())))
    }

    fn commit(
        &self,
        staged: &Path,
        expect: &UploadExpectations,
        digest: String,
        size: u64,
    ) -> Result<StoredContext, ContextStoreError> {
        if !expect.sha256_hex.is_empty() && expect.sha256_hex != digest {
            return Err(ContextStoreError::DigestMismatch {
                expected: expect.sha256_hex.clone(),
                actual: digest,
            });
        }
        if expect.size != 0 && expect.size != size {
            return Err(ContextStoreError::SizeMismatch {
                expected: expect.size,
                actual: size,
            });
        }
        let id = format!("sha256:{digest}");
        let target = self.blobs.join(&digest);
        if target.is_file() {
            return Ok(StoredContext {
                id,
                size,
                already_existed: true,
            });
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(staged, std::fs::Permissions::from_mode(0o444))
            .map_err(io_error(staged))?;
        std::fs::rename(staged, &target).map_err(io_error(&target))?;
        Ok(StoredContext {
            id,
            size,
            already_existed: false,
        })
    }

    /// Number and total size of stored contexts.
    pub fn stats(&self) -> (u64, u64) {
        let Ok(entries) = std::fs::read_dir(&self.blobs) else {
            return (0, 0);
        };
        entries
            .filter_map(|entry| entry.ok()?.metadata().ok())
            .fold((0, 0), |(count, bytes), meta| {
                (count + 1, bytes + meta.len())
            })
    }
}

static STAGING_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    async fn put_chunks(
        store: &ContextStore,
        expect: UploadExpectations,
        chunks: Vec<Vec<u8>>,
    ) -> Result<StoredContext, ContextStoreError> {
        store
            .put(
                expect,
                futures::stream::iter(chunks.into_iter().map(Ok::<_, ()>)),
            )
            .await
            .expect("source never fails here")
    }

    #[tokio::test]
    async fn stores_once_by_content_and_verifies_promises() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContextStore::open(dir.path(), 1 << 20).expect("open");
        let stored = put_chunks(
            &store,
            Default::default(),
            vec![b"hello ".to_vec(), b"world".to_vec()],
        )
        .await
        .expect("stored");
        assert_eq!(
            stored.id,
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(stored.size, 11);
        assert!(!stored.already_existed);
        let path = store.path_of(&stored.id).expect("path");
        assert_eq!(std::fs::read(&path).expect("read"), b"hello world");

        let again = put_chunks(&store, Default::default(), vec![b"hello world".to_vec()])
            .await
            .expect("stored");
        assert!(again.already_existed);
        assert_eq!(store.stats(), (1, 11));

        let wrong = UploadExpectations {
            sha256_hex: "0".repeat(64),
            size: 0,
        };
        assert!(matches!(
            put_chunks(&store, wrong, vec![b"x".to_vec()]).await,
            Err(ContextStoreError::DigestMismatch { .. })
        ));
        let short = UploadExpectations {
            sha256_hex: String::new(),
            size: 5,
        };
        assert!(matches!(
            put_chunks(&store, short, vec![b"x".to_vec()]).await,
            Err(ContextStoreError::SizeMismatch { .. })
        ));
        assert_eq!(store.stats(), (1, 11), "rejected uploads leave nothing");
    }

    #[tokio::test]
    async fn too_large_and_broken_uploads_store_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContextStore::open(dir.path(), 8).expect("open");
        assert!(matches!(
            put_chunks(&store, Default::default(), vec![vec![0; 5], vec![0; 5]]).await,
            Err(ContextStoreError::TooLarge { limit: 8 })
        ));
        let broken = store
            .put(
                Default::default(),
                futures::stream::iter([Ok(vec![1]), Err("client went away")]),
            )
            .await;
        assert_eq!(broken.err(), Some("client went away"));
        assert_eq!(store.stats(), (0, 0));
        assert_eq!(
            std::fs::read_dir(dir.path().join("staging"))
                .expect("dir")
                .count(),
            0
        );
        assert!(parse_context_id("sha256:abc").is_none());
    }
}
