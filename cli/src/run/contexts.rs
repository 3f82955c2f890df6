//! Reading `--context` files (or stdin) and turning them into `ContextInput`s:
//! small UTF-8 contexts inline, the others uploaded first.

use std::io::Read;

use rlm_proto::rlm::v1::context_input::Source;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::{ContextFormat, ContextInput};
use tonic::transport::Channel;

use super::upload;
use super::view::View;
use crate::exit::Failure;
use crate::format;

/// Contexts up to this size (and valid UTF-8) are sent inline.
pub const INLINE_MAX: usize = 1 << 20;

/// A context read from the local machine.
pub struct LocalContext {
    /// The file path, or `stdin`.
    pub origin: String,
    pub bytes: Vec<u8>,
    pub json: bool,
}

/// Reads every `--context` (at most one `-`); with `json`, each must parse.
pub fn read_all(paths: &[String], json: bool) -> Result<Vec<LocalContext>, Failure> {
    if paths.iter().filter(|p| p.as_str() == "-").count() > 1 {
        return Err(Failure::invalid(
            "--context: stdin (`-`) can be given only once",
        ));
    }
    paths.iter().map(|path| read_one(path, json)).collect()
}

fn read_one(path: &str, json: bool) -> Result<LocalContext, Failure> {
    let (origin, bytes) = if path == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::invalid(format!("--context -: reading stdin: {e}")))?;
        ("stdin".to_owned(), bytes)
    } else {
        let bytes =
            std::fs::read(path).map_err(|e| Failure::invalid(format!("--context {path}: {e}")))?;
        (path.to_owned(), bytes)
    };
    if json && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return Err(Failure::invalid(format!(
            "--context {origin}: not valid JSON (--json-context): {e}"
        )));
    }
    Ok(LocalContext {
        origin,
        bytes,
        json,
    })
}

/// The request's contexts, uploading those too large (or not UTF-8) to send inline.
pub async fn prepare(
    client: &mut RlmServiceClient<Channel>,
    contexts: Vec<LocalContext>,
    view: &mut View,
) -> Result<Vec<ContextInput>, Failure> {
    let mut inputs = Vec::with_capacity(contexts.len());
    for context in contexts {
        let format = if context.json {
            ContextFormat::Json
        } else {
            ContextFormat::Text
        } as i32;
        let size = context.bytes.len();
        let source = match String::from_utf8(context.bytes) {
            Ok(text) if text.len() <= INLINE_MAX => Source::Text(text),
            Ok(text) => {
                view.note(&format!(
                    "uploading context {} ({})",
                    context.origin,
                    format::bytes(size as u64)
                ));
                Source::ContextId(upload::upload(client, text.into_bytes()).await?)
            }
            Err(not_utf8) => {
                view.note(&format!(
                    "uploading context {} ({}, not UTF-8: invalid sequences become U+FFFD)",
                    context.origin,
                    format::bytes(size as u64)
                ));
                Source::ContextId(upload::upload(client, not_utf8.into_bytes()).await?)
            }
        };
        inputs.push(ContextInput {
            source: Some(source),
            format,
        });
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_contexts_must_parse_and_stdin_is_given_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.json");
        let bad = dir.path().join("bad.json");
        std::fs::write(&good, br#"[{"a": 1}]"#).expect("write");
        std::fs::write(&bad, b"{nope").expect("write");
        let read = |p: &std::path::Path, json| read_all(&[p.display().to_string()], json);
        assert_eq!(read(&good, true).expect("good")[0].bytes.len(), 10);
        let err = read(&bad, true).err().expect("bad json");
        assert_eq!(err.code, 2);
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
        assert!(read(&bad, false).is_ok(), "text contexts are not parsed");
        let missing = read(&dir.path().join("missing"), false)
            .err()
            .expect("missing");
        assert_eq!(missing.code, 2);
        let twice = read_all(&["-".into(), "-".into()], false)
            .err()
            .expect("twice");
        assert_eq!(twice.code, 2);
    }
}
