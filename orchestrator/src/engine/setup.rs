//! Binding a node's contexts in its fresh REPL: JSON contexts are parsed
//! there, and the model is told what the REPL really holds (type, length,
//! preview), measured by the REPL itself.

use std::time::Duration;

use rlm_proto::rlm::sandbox::v1::{SubcallRequest, SubcallResult, subcall_result};
use serde::Deserialize;
use tonic::Status;

use super::node::NodeContext;
use crate::engine::prompt::{ContextMeta, PREVIEW_CHARS};
use crate::remote_session::RemoteSession;

const MARKER: &str = "@@rlm-contexts@@ ";

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("sandbox: {}", .0.message())]
    Sandbox(Status),
    #[error("context {index}: {message}")]
    Context { index: usize, message: String },
    #[error("binding the contexts failed: {0}")]
    Script(String),
}

#[derive(Deserialize)]
struct Described {
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    length: u64,
    #[serde(default)]
    preview: String,
    #[serde(default)]
    error: Option<String>,
}

fn script(contexts: &[NodeContext]) -> String {
    let flags: Vec<&str> = contexts
        .iter()
        .map(|c| if c.json { "True" } else { "False" })
        .collect();
    format!(
        r#"def _rlm_bind(flags):
    import json
    g = globals()
    out = []
    for i, as_json in enumerate(flags):
        name = "context_%d" % i
        v = g[name]
        if as_json:
            try:
                v = json.loads(v)
            except ValueError as e:
                out.append({{"error": "not valid JSON: %s" % e}})
                continue
            g[name] = v
            if i == 0:
                g["context"] = v
        if isinstance(v, str):
            kind, text = "str", v
        else:
            text = json.dumps(v, ensure_ascii=False)
            kind = "%s (from JSON)" % type(v).__name__
            if isinstance(v, (list, dict)):
                kind += " of %d items" % len(v)
        out.append({{"name": name, "kind": kind, "length": len(text), "preview": text[:{preview}]}})
    print({marker:?} + json.dumps(out))
_rlm_bind([{flags}])
del _rlm_bind
"#,
        preview = PREVIEW_CHARS,
        marker = MARKER,
        flags = flags.join(", "),
    )
}

async fn no_subcalls(request: SubcallRequest) -> Vec<SubcallResult> {
    request
        .prompts
        .iter()
        .map(|_| SubcallResult {
            outcome: Some(subcall_result::Outcome::Error(
                "not available while binding contexts".into(),
            )),
        })
        .collect()
}

/// Binds `contexts` in `session` and returns their description. With one
/// context it is presented as `context`; with several, as `context_0..n`.
pub async fn bind_contexts(
    session: &mut RemoteSession,
    contexts: &[NodeContext],
    timeout: Duration,
) -> Result<Vec<ContextMeta>, SetupError> {
    if contexts.is_empty() {
        return Ok(Vec::new());
    }
    let run = session
        .run(&script(contexts), timeout, no_subcalls)
        .await
        .map_err(SetupError::Sandbox)?;
    if let Some(e) = &run.result.error {
        return Err(SetupError::Script(format!(
            "{}: {}",
            e.exception_type, e.message
        )));
    }
    if run.result.session_ended {
        return Err(SetupError::Script(format!(
            "the session ended: {}",
            run.result.end_detail
        )));
    }
    let stdout = String::from_utf8_lossy(&run.stdout);
    let json = stdout
        .rsplit_once(MARKER)
        .map(|(_, json)| json.trim())
        .ok_or_else(|| SetupError::Script("no description printed".into()))?;
    let described: Vec<Described> =
        serde_json::from_str(json).map_err(|e| SetupError::Script(e.to_string()))?;
    let single = described.len() == 1;
    described
        .into_iter()
        .enumerate()
        .map(|(index, d)| match d.error {
            Some(message) => Err(SetupError::Context { index, message }),
            None => Ok(ContextMeta {
                name: if single { "context".to_owned() } else { d.name },
                kind: d.kind,
                length_chars: d.length,
                preview: d.preview,
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_lists_one_flag_per_context() {
        let s = script(&[
            NodeContext {
                id: "a".into(),
                json: false,
            },
            NodeContext {
                id: "b".into(),
                json: true,
            },
        ]);
        assert!(s.contains("_rlm_bind([False, True])"), "{s}");
        assert!(s.contains("text[:200]"), "{s}");
    }
}
