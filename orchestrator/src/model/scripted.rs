//! The scripted offline model (`scripted:<file>`): replays a turns file, for
//! tests and demos without a model server. It is named "scripted" in every
//! model reference and never passes for a real model.
//!
//! # Turns file format
//!
//! UTF-8 text; turns are separated by a line consisting of exactly `---`
//! (trailing whitespace and `\r` ignored). Blank lines around a turn are
//! dropped; everything else is kept verbatim.
//!
//! ~~~text
//! ```repl
//! print(len(context))
//! ```
//! ---
//! FINAL(42)
//! ~~~
//!
//! A call answers with turn `n`, where `n` is the number of assistant
//! messages already in the request — derived from the conversation alone, so
//! concurrent and recursive callers each get their own trajectory. Once the
//! turns run out the last one repeats. Usage is estimated as ceil(chars/4)
//! of the request's messages (input) and of the turn (output); no cost.

use std::path::Path;
use std::time::Instant;

use super::transport::estimate_tokens;
use super::{ChatRequest, ChatResponse, ModelClient, ModelError, Provider, Role, Usage};

/// Parses a turns file's text (see the module docs). Fails on a file with no
/// turns.
pub fn parse_turns(text: &str) -> Result<Vec<String>, String> {
    let mut turns = vec![Vec::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            turns.push(Vec::new());
        } else if let Some(current) = turns.last_mut() {
            current.push(line);
        }
    }
    let turns: Vec<String> = turns
        .into_iter()
        .map(|lines| lines.join("\n").trim_matches('\n').to_owned())
        .collect();
    if turns.iter().all(String::is_empty) {
        return Err("the turns file has no turns".to_owned());
    }
    Ok(turns)
}

/// The turn that answers `request`: index = assistant messages so far,
/// clamped to the last turn.
pub fn select_turn<'a>(turns: &'a [String], request: &ChatRequest) -> Option<&'a str> {
    let index = request
        .messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .count();
    turns
        .get(index.min(turns.len().checked_sub(1)?))
        .map(String::as_str)
}

/// Stateless: the turns file (the model name) is read on each call, so edits
/// apply to the next call and nothing is shared between callers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptedModel;

impl ModelClient for ScriptedModel {
    async fn chat(
        &self,
        request: ChatRequest,
        _deadline: Instant,
    ) -> Result<ChatResponse, ModelError> {
        let started = Instant::now();
        if request.model.provider != Provider::Scripted {
            return Err(ModelError::Config(format!(
                "the scripted model cannot serve `{}`",
                request.model
            )));
        }
        let path = Path::new(&request.model.name);
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
            ModelError::Config(format!(
                "cannot read scripted turns file {}: {e}",
                path.display()
            ))
        })?;
        let turns = parse_turns(&text).map_err(|e| {
            ModelError::Config(format!("scripted turns file {}: {e}", path.display()))
        })?;
        let turn = select_turn(&turns, &request).unwrap_or_default().to_owned();
        let input_tokens = request
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content))
            .sum();
        let usage = Usage {
            input_tokens,
            output_tokens: estimate_tokens(&turn),
        };
        Ok(ChatResponse {
            text: turn,
            usage,
            provider_cost_usd: None,
            cost_usd: None,
            latency: started.elapsed(),
            attempts: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChatMessage, Models, ModelsConfig, PriceTable};
    use std::time::Duration;

    fn request(path: &Path, assistants: usize) -> ChatRequest {
        let mut messages = vec![ChatMessage::system("sys"), ChatMessage::user("task")];
        for i in 0..assistants {
            messages.push(ChatMessage::assistant(format!("turn {i}")));
            messages.push(ChatMessage::user("observation"));
        }
        ChatRequest {
            model: format!("scripted:{}", path.display())
                .parse()
                .expect("scripted ref"),
            messages,
            max_tokens: None,
            temperature: None,
        }
    }

    #[test]
    fn parses_turns() {
        let turns = parse_turns("first\nline two\n---\r\n\nsecond\n\n---  \nthird").expect("turns");
        assert_eq!(turns, ["first\nline two", "second", "third"]);
        assert!(parse_turns("\n---\n").is_err());
        assert!(parse_turns("").is_err());
    }

    #[tokio::test]
    async fn replays_turns_statelessly_and_repeats_the_last() {
        let path = std::env::temp_dir().join(format!("rlm-scripted-{}.txt", std::process::id()));
        std::fs::write(&path, "```repl\nprint(1)\n```\n---\nFINAL(42)\n").expect("write turns");
        let models = Models::new(ModelsConfig {
            pricing: PriceTable::builtin(),
            ..ModelsConfig::default()
        })
        .expect("models");
        let deadline = Instant::now() + Duration::from_secs(5);

        let first = models
            .chat(request(&path, 0), deadline)
            .await
            .expect("turn 0");
        assert_eq!(first.text, "```repl\nprint(1)\n```");
        assert_eq!(
            first.usage,
            Usage {
                input_tokens: 1 + 1,
                output_tokens: 19_u64.div_ceil(4)
            }
        );
        assert_eq!(first.cost_usd, None, "a scripted model has no price");
        // Out of order: selection depends only on the request.
        assert_eq!(
            models
                .chat(request(&path, 1), deadline)
                .await
                .expect("turn 1")
                .text,
            "FINAL(42)"
        );
        assert_eq!(
            models
                .chat(request(&path, 0), deadline)
                .await
                .expect("turn 0 again")
                .text,
            first.text
        );
        assert_eq!(
            models
                .chat(request(&path, 7), deadline)
                .await
                .expect("past the end")
                .text,
            "FINAL(42)"
        );

        std::fs::remove_file(&path).expect("cleanup");
        let err = models
            .chat(request(&path, 0), deadline)
            .await
            .expect_err("missing file");
        assert!(
            matches!(&err, ModelError::Config(m) if m.contains("rlm-scripted")),
            "{err}"
        );
    }
}
