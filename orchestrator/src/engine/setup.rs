//! Binding a node's contexts in its fresh REPL: JSON contexts are parsed
//! there, and the model is told what the REPL really holds (type, length,
//! preview), measured by the REPL itself.

use std::time::Duration;

use rlm_proto::rlm::sandbox::v1::{ContextSummary, SubcallRequest, SubcallResult, subcall_result};
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

/// The bind script: JSON contexts are parsed (`json` is imported only then);
/// each context is then described on one marker line `index kind-hex length
/// preview-hex`, using builtins only. The length and preview are those of the
/// text (before JSON parsing), as the agent measures them.
fn script(contexts: &[NodeContext]) -> String {
    let flags: Vec<&str> = contexts
        .iter()
        .map(|c| if c.json { "True" } else { "False" })
        .collect();
    format!(
        r#"def _rlm_bind(flags):
    g = globals()
    for i, as_json in enumerate(flags):
        name = "context_%d" % i
        text = g[name]
        kind = "str"
        if as_json:
            import json
            try:
                v = json.loads(text)
            except ValueError as e:
                print({marker:?} + "%d error %s" % (i, str(e).encode("utf-8", "replace").hex()))
                continue
            g[name] = v
            if i == 0:
                g["context"] = v
            kind = "%s (from JSON)" % type(v).__name__
            if isinstance(v, (list, dict)):
                kind += " of %d items" % len(v)
        print({marker:?} + "%d %s %d %s" % (i, kind.encode().hex(), len(text), text[:{preview}].encode("utf-8", "replace").hex()))
_rlm_bind([{flags}])
del _rlm_bind
"#,
        preview = PREVIEW_CHARS,
        marker = MARKER,
        flags = flags.join(", "),
    )
}

/// The contexts as the agent described them at CreateSession (the same
/// kind, length and preview the bind script reports), or `None` when it did
/// not describe them all: the bind must then run first.
pub fn described_by_agent(
    contexts: &[NodeContext],
    summaries: &[ContextSummary],
) -> Option<Vec<ContextMeta>> {
    if summaries.len() != contexts.len() {
        return None;
    }
    let single = contexts.len() == 1;
    (0..)
        .zip(contexts.iter().zip(summaries))
        .map(|(index, (context, summary))| {
            let kind = match (&summary.json, context.json) {
                (_, false) => "str".to_owned(),
                (Some(shape), true) => {
                    format!("{} (from JSON) of {} items", shape.r#type, shape.items)
                }
                (None, true) => return None,
            };
            Some(ContextMeta {
                name: if single {
                    "context".to_owned()
                } else {
                    format!("context_{index}")
                },
                kind,
                length_chars: summary.chars,
                preview: summary.preview.chars().take(PREVIEW_CHARS).collect(),
            })
        })
        .collect()
}

fn unhex(text: &str) -> Option<String> {
    let bytes = hex::decode(text).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// One marker line: `Ok((index, meta))`, or the context's error.
fn marker_line(line: &str) -> Option<(usize, Result<ContextMeta, String>)> {
    let mut fields = line.split(' ');
    let index: usize = fields.next()?.parse().ok()?;
    let kind = fields.next()?;
    if kind == "error" {
        return Some((index, Err(unhex(fields.next()?)?)));
    }
    let length: u64 = fields.next()?.parse().ok()?;
    let preview = unhex(fields.next().unwrap_or_default())?;
    Some((
        index,
        Ok(ContextMeta {
            name: format!("context_{index}"),
            kind: unhex(kind)?,
            length_chars: length,
            preview,
        }),
    ))
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
    let lines: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(MARKER))
        .collect();
    if lines.len() != contexts.len() {
        return Err(SetupError::Script(format!(
            "{} of {} contexts described",
            lines.len(),
            contexts.len()
        )));
    }
    let single = contexts.len() == 1;
    let mut metas = Vec::with_capacity(lines.len());
    for line in lines {
        let (index, meta) = marker_line(line)
            .ok_or_else(|| SetupError::Script(format!("unreadable description {line:?}")))?;
        let mut meta = meta.map_err(|message| SetupError::Context {
            index,
            message: format!("not valid JSON: {message}"),
        })?;
        if single {
            "context".clone_into(&mut meta.name);
        }
        metas.push(meta);
    }
    Ok(metas)
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

    #[test]
    fn marker_lines_decode() {
        let hex = |t: &str| hex::encode(t.as_bytes());
        let (i, meta) =
            marker_line(&format!("1 {} 12 {}", hex("str"), hex("héllo"))).expect("line");
        let meta = meta.expect("described");
        assert_eq!(
            (
                i,
                meta.kind.as_str(),
                meta.length_chars,
                meta.preview.as_str()
            ),
            (1, "str", 12, "héllo")
        );
        let (i, error) = marker_line(&format!("0 error {}", hex("Expecting value"))).expect("line");
        assert_eq!(
            (i, error.expect_err("error").as_str()),
            (0, "Expecting value")
        );
        assert!(marker_line("x y").is_none());
        assert!(marker_line("0 zz 1 00").is_none());
    }

    #[test]
    fn agent_summaries_describe_contexts_like_the_bind_script() {
        let contexts = |json: &[bool]| -> Vec<NodeContext> {
            json.iter()
                .map(|&json| NodeContext {
                    id: "sha256:x".into(),
                    json,
                })
                .collect()
        };
        let summary = |chars, preview: &str, shape: Option<(&str, u64)>| ContextSummary {
            chars,
            preview: preview.into(),
            json: shape.map(|(t, items)| rlm_proto::rlm::sandbox::v1::JsonShape {
                r#type: t.into(),
                items,
            }),
        };
        let one = described_by_agent(&contexts(&[false]), &[summary(5, "hello", None)])
            .expect("described");
        assert_eq!(
            (
                one[0].name.as_str(),
                one[0].kind.as_str(),
                one[0].length_chars
            ),
            ("context", "str", 5)
        );
        let two = described_by_agent(
            &contexts(&[false, true]),
            &[
                summary(1, "a", None),
                summary(9, "[1, 2, 3]", Some(("list", 3))),
            ],
        )
        .expect("described");
        assert_eq!(
            two.iter()
                .map(|m| (m.name.as_str(), m.kind.as_str()))
                .collect::<Vec<_>>(),
            [
                ("context_0", "str"),
                ("context_1", "list (from JSON) of 3 items")
            ]
        );
        // A JSON context the agent could not describe, or a missing summary:
        // the bind script describes them.
        assert!(described_by_agent(&contexts(&[true]), &[summary(5, "[NaN]", None)]).is_none());
        assert!(described_by_agent(&contexts(&[false]), &[]).is_none());
    }
}
