//! What the model sees: the system prompt, the first user message (task plus
//! context *metadata*), and the observation sent back after its code ran.
//!
//! Everything here is a pure function of its arguments; the engine decides
//! when to send what. Output is capped with [`truncate_output`], which always
//! cuts at char boundaries and says how much it left out.

use std::fmt::Write as _;

/// Longest context preview in the first message, in chars.
pub const PREVIEW_CHARS: usize = 200;
/// Cap on one block's stdout in an observation, in chars.
pub const STDOUT_CHARS: usize = 20_000;
/// Cap on one block's stderr in an observation, in chars.
pub const STDERR_CHARS: usize = 5_000;
/// How many trailing traceback lines an observation keeps.
pub const TRACEBACK_LINES: usize = 12;
/// Cap on the kept traceback lines together, in chars.
pub const TRACEBACK_CHARS: usize = 4_000;
/// Cap on an echoed `FINAL` value in an observation, in chars.
pub const FINAL_VALUE_CHARS: usize = 1_000;

/// What the system prompt must say about this call's place in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptOptions {
    /// Depth of this call: 0 for the root, children are at `depth + 1`.
    pub depth: u32,
    /// Deepest level at which a child RLM may run.
    pub max_depth: u32,
    /// Model turns this call may take.
    pub max_iterations: u32,
    /// `llm_query` / `llm_query_batched` are available.
    pub subcalls_allowed: bool,
    /// `rlm_query` / `rlm_query_batched` are available.
    pub child_rlms_allowed: bool,
}

impl PromptOptions {
    /// Whether `rlm_query` from this call makes a plain sub-model call instead
    /// of starting a child RLM: children run at `depth + 1`, so only calls
    /// below `max_depth` may start one (the engine applies the same rule).
    pub fn rlm_query_is_plain(&self) -> bool {
        self.depth >= self.max_depth
    }
}

/// Metadata about one context variable (never its content beyond a preview).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextMeta {
    /// Variable name in the REPL: `"context"`, `"context_0"`, `"context_1"`, ...
    pub name: String,
    /// Python type name, e.g. `"str"`.
    pub kind: String,
    /// Length in chars (Unicode scalar values).
    pub length_chars: u64,
    /// At most [`PREVIEW_CHARS`] chars of the start, plus `...` when cut.
    pub preview: String,
}

/// What one code block's run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionReport {
    pub stdout: String,
    pub stderr: String,
    /// `(exception type, message, traceback)`.
    pub error: Option<(String, String, String)>,
    /// The sandbox already cut the output.
    pub truncated: bool,
    /// The value recorded by `FINAL()` / `FINAL_VAR()` in this block.
    pub final_value: Option<String>,
}

/// What remains of the run's budget; unknown (unlimited) parts are `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetLeft {
    pub iterations: u32,
    pub tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub seconds: Option<u64>,
}

/// The system prompt for one RLM call.
pub fn system_prompt(opts: &PromptOptions) -> String {
    let mut p = String::with_capacity(4096);
    p.push_str(
        "You solve a task over a context that is too large to read at once. The context \
         lives in a Python REPL; you explore it by writing code, and you see only what your \
         code prints.\n\n",
    );
    p.push_str("## Running code\n");
    p.push_str(
        "- Put code in fenced blocks that open with ```repl (```python is accepted too). \
         Every such block in your reply runs, in order, in one persistent Python session: \
         variables, imports and functions stay defined across blocks and turns. Blocks in \
         other languages are not run.\n\
         - After your reply, the next message shows, for each block, what it printed to \
         stdout and stderr and any exception. Long output is cut in the middle with a \
         marker such as `[... 12345 characters omitted ...]`, so print counts, slices and \
         summaries rather than large texts.\n",
    );
    let _ = writeln!(
        p,
        "- You have at most {} turns. Each observation ends with the turn number and the \
         remaining budget.",
        opts.max_iterations
    );
    p.push_str("\n## Variables\n");
    p.push_str(
        "- `context`: the context. Its type and length are given in the first message, \
         with a short preview; do not print it whole — slice it, search it (e.g. with `re`) \
         or split it into chunks.\n\
         - With several contexts they are `context_0`, `context_1`, ...; `context` is the \
         same object as `context_0`.\n",
    );
    p.push_str("\n## Functions\n");
    if opts.subcalls_allowed {
        p.push_str(
            "- `llm_query(prompt, model=None) -> str`: one call to a sub-model. It sees only \
             `prompt` (no REPL, no context), so include the text it needs. Good for reading or \
             classifying one chunk.\n\
             - `llm_query_batched(prompts, model=None) -> list[str]`: the same for many \
             prompts, run concurrently; answers come back in order, and a failed item comes \
             back as an error string. Prefer it to calling `llm_query` in a loop.\n",
        );
    } else {
        p.push_str("- `llm_query` and `llm_query_batched` are not available in this run.\n");
    }
    if opts.child_rlms_allowed {
        p.push_str(
            "- `rlm_query(prompt, context=None) -> str`: starts a child RLM — a model working \
             like you, with its own REPL in which `context` is the `context` you pass — and \
             returns its final answer. Use it for sub-tasks that themselves need code.\n\
             - `rlm_query_batched(prompts, contexts=None) -> list[str]`: several child RLMs \
             run concurrently; answers in order.\n",
        );
        if opts.rlm_query_is_plain() {
            p.push_str(
                "- At this depth no further child RLM can start: `rlm_query` and \
                 `rlm_query_batched` make plain sub-model calls, like `llm_query`, with the \
                 prompt (and context, if given) as the text.\n",
            );
        }
    } else {
        p.push_str("- `rlm_query` and `rlm_query_batched` are not available in this run.\n");
    }
    p.push_str("- `SHOW_VARS()`: prints and returns the names and types of your variables.\n");
    p.push_str("\n## Finishing\n");
    p.push_str(
        "- In code: `FINAL(value)` ends the run with `str(value)` as the answer; \
         `FINAL_VAR(\"name\")` ends it with the variable called `name` (pass the name as a \
         string).\n\
         - Or, outside any code block, write a line that starts with `FINAL(your answer)`, \
         or `FINAL_VAR(name)` for a variable.\n\
         - Finish only once the answer is established from the context; give only the \
         answer, in the form the task asks for.\n",
    );
    if opts.depth > 0 {
        let _ = writeln!(
            p,
            "\nYou are a child RLM at depth {} (the root is depth 0); your final answer is \
             returned to the code that called you.",
            opts.depth
        );
    }
    p
}

/// [`ContextMeta`] for a `str` context called `name`: its length in chars
/// and a preview of at most [`PREVIEW_CHARS`] chars, cut at a char boundary
/// and followed by `...` when the text is longer.
pub fn context_meta(name: impl Into<String>, text: &str) -> ContextMeta {
    let (head, cut) = prefix_chars(text, PREVIEW_CHARS);
    let mut preview = head.to_owned();
    if cut {
        preview.push_str("...");
    }
    ContextMeta {
        name: name.into(),
        kind: "str".to_owned(),
        length_chars: text.chars().count() as u64,
        preview,
    }
}

/// The first user message: the task and, for each context, only its
/// metadata (name, type, length, preview — the preview is re-capped here, so
/// a hand-built [`ContextMeta`] cannot smuggle in a whole context).
pub fn first_user_message(task: &str, contexts: &[ContextMeta]) -> String {
    let mut m = String::with_capacity(task.len() + 512);
    m.push_str("Task:\n");
    m.push_str(task.trim_end());
    m.push_str("\n\n");
    if contexts.is_empty() {
        m.push_str("No context was given for this task.\n");
    } else {
        m.push_str(
            "The context is loaded in the REPL and is not shown here. Variables \
             (preview = the first characters only, not the full value):\n",
        );
        for c in contexts {
            let (head, cut) = prefix_chars(&c.preview, PREVIEW_CHARS + 3);
            let ellipsis = if cut { "..." } else { "" };
            let _ = writeln!(
                m,
                "- `{}`: {}, {} characters; preview: {:?}{}",
                c.name, c.kind, c.length_chars, head, ellipsis
            );
        }
    }
    m.push_str(
        "\nStart by exploring the context in a ```repl block; finish with FINAL(...) or \
         FINAL_VAR(...).",
    );
    m
}

/// The user message after the code of turn `turn` (1-based) ran.
///
/// Layout, per block `i` of `n`: a header `[block i/n]`, then `stdout:` with
/// the output verbatim (capped at [`STDOUT_CHARS`]), `stderr:` (capped at
/// [`STDERR_CHARS`]), `error: Type: message` with the last
/// [`TRACEBACK_LINES`] traceback lines, and `FINAL value:` when the block set
/// one; empty parts are left out (`(no output)` if all are). It ends with a
/// line `[turn t/max] remaining: ...` listing the known budget parts.
pub fn observation(
    turn: u32,
    max_turns: u32,
    executions: &[ExecutionReport],
    budget_left: &BudgetLeft,
) -> String {
    let mut o = String::new();
    if executions.is_empty() {
        o.push_str(
            "Your reply had no ```repl code block and no FINAL(...) line. Write code in a \
             ```repl block, or give the answer with FINAL(...).\n",
        );
    }
    let n = executions.len();
    for (i, e) in executions.iter().enumerate() {
        if i > 0 {
            o.push('\n');
        }
        let _ = writeln!(o, "[block {}/{}]", i + 1, n);
        let mut empty = true;
        if !e.stdout.is_empty() {
            let (out, cut) = truncate_output(&e.stdout, STDOUT_CHARS);
            push_section(&mut o, "stdout", &out, cut || e.truncated);
            empty = false;
        } else if e.truncated {
            o.push_str("stdout: (cut by the sandbox)\n");
        }
        if !e.stderr.is_empty() {
            let (err, cut) = truncate_output(&e.stderr, STDERR_CHARS);
            push_section(&mut o, "stderr", &err, cut);
            empty = false;
        }
        if let Some((kind, message, traceback)) = &e.error {
            let _ = writeln!(o, "error: {}: {}", kind, message.trim_end());
            let tb = last_lines(traceback, TRACEBACK_LINES);
            if !tb.is_empty() {
                let (tb, _) = truncate_output(&tb, TRACEBACK_CHARS);
                o.push_str("traceback (most recent call last):\n");
                o.push_str(&tb);
                o.push('\n');
            }
            empty = false;
        }
        if let Some(v) = &e.final_value {
            let (v, _) = truncate_output(v, FINAL_VALUE_CHARS);
            let _ = writeln!(o, "FINAL value: {v}");
            empty = false;
        }
        if empty {
            o.push_str("(no output)\n");
        }
    }
    o.push('\n');
    let _ = write!(
        o,
        "[turn {turn}/{max_turns}] remaining: {} turns",
        budget_left.iterations
    );
    if let Some(t) = budget_left.tokens {
        let _ = write!(o, ", {t} tokens");
    }
    if let Some(c) = budget_left.cost_usd {
        let _ = write!(o, ", ${c:.4}");
    }
    if let Some(s) = budget_left.seconds {
        let _ = write!(o, ", {s} s");
    }
    if budget_left.iterations == 1 {
        o.push_str("\nYour next reply is the last one: give the final answer with FINAL(...).");
    }
    o
}

/// Caps `text` at `max_chars` chars: if longer, keeps the first half and the
/// last half of the budget (at char boundaries) with a line
/// `[... N characters omitted ...]` between them. Returns the text and
/// whether it was cut. The marker is not counted in `max_chars`.
pub fn truncate_output(text: &str, max_chars: usize) -> (String, bool) {
    let (_, cut) = prefix_chars(text, max_chars);
    if !cut {
        return (text.to_owned(), false);
    }
    let total = text.chars().count();
    let head_chars = max_chars / 2;
    let tail_chars = max_chars - head_chars;
    let (head, _) = prefix_chars(text, head_chars);
    let tail_start = if tail_chars == 0 {
        text.len()
    } else {
        text.char_indices()
            .rev()
            .nth(tail_chars - 1)
            .map_or(0, |(i, _)| i)
    };
    let tail = text.get(tail_start..).unwrap_or_default();
    let omitted = total - head_chars - tail_chars;
    let mut out = String::with_capacity(head.len() + tail.len() + 48);
    out.push_str(head);
    if !head.is_empty() && !head.ends_with('\n') {
        out.push('\n');
    }
    let _ = write!(out, "[... {omitted} characters omitted ...]");
    if !tail.is_empty() && !tail.starts_with('\n') {
        out.push('\n');
    }
    out.push_str(tail);
    (out, true)
}

/// The first `n` chars of `s` and whether anything was left out.
fn prefix_chars(s: &str, n: usize) -> (&str, bool) {
    match s.char_indices().nth(n) {
        Some((i, _)) => (s.get(..i).unwrap_or_default(), true),
        None => (s, false),
    }
}

fn push_section(o: &mut String, label: &str, body: &str, cut: bool) {
    o.push_str(label);
    if cut {
        o.push_str(" (truncated)");
    }
    o.push_str(":\n");
    o.push_str(body);
    if !body.ends_with('\n') {
        o.push('\n');
    }
}

/// The last `n` non-empty-trailing lines of `text`, with a note of how many
/// earlier lines were dropped.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    if lines.len() <= n {
        return lines.join("\n");
    }
    let dropped = lines.len() - n;
    let kept = lines.get(dropped..).unwrap_or_default();
    format!(
        "[... {dropped} earlier traceback lines omitted ...]\n{}",
        kept.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> PromptOptions {
        PromptOptions {
            depth: 0,
            max_depth: 2,
            max_iterations: 20,
            subcalls_allowed: true,
            child_rlms_allowed: true,
        }
    }

    fn report(stdout: &str) -> ExecutionReport {
        ExecutionReport {
            stdout: stdout.to_owned(),
            stderr: String::new(),
            error: None,
            truncated: false,
            final_value: None,
        }
    }

    fn budget(iterations: u32) -> BudgetLeft {
        BudgetLeft {
            iterations,
            tokens: None,
            cost_usd: None,
            seconds: None,
        }
    }

    #[test]
    fn system_prompt_mentions_everything() {
        let p = system_prompt(&opts());
        for needle in [
            "```repl",
            "```python",
            "persistent",
            "`context`",
            "`context_0`",
            "llm_query(prompt, model=None) -> str",
            "llm_query_batched(prompts, model=None) -> list[str]",
            "rlm_query(prompt, context=None) -> str",
            "rlm_query_batched(prompts, contexts=None) -> list[str]",
            "SHOW_VARS()",
            "FINAL(value)",
            "FINAL_VAR(\"name\")",
            "FINAL(your answer)",
            "characters omitted",
            "at most 20 turns",
            "do not print it whole",
        ] {
            assert!(p.contains(needle), "missing {needle:?}");
        }
        assert!(!p.contains("not available"));
        assert!(!p.contains("no further child RLM"));
        assert!(!p.contains("depth 0"));
        // The fake model recognises sub-calls by this marker.
        assert!(!p.contains("COUNT_WORD["));
    }

    #[test]
    fn system_prompt_follows_options() {
        let p = system_prompt(&PromptOptions {
            subcalls_allowed: false,
            child_rlms_allowed: false,
            ..opts()
        });
        assert!(p.contains("`llm_query` and `llm_query_batched` are not available"));
        assert!(p.contains("`rlm_query` and `rlm_query_batched` are not available"));
        assert!(!p.contains("llm_query(prompt, model=None)"));
        assert!(!p.contains("rlm_query(prompt, context=None)"));

        let deepest = PromptOptions { depth: 2, ..opts() };
        assert!(deepest.rlm_query_is_plain());
        assert!(!PromptOptions { depth: 1, ..opts() }.rlm_query_is_plain());
        assert!(!opts().rlm_query_is_plain());
        let p = system_prompt(&deepest);
        assert!(p.contains("no further child RLM can start"));
        assert!(p.contains("child RLM at depth 2"));
    }

    #[test]
    fn context_meta_short_and_long() {
        let short = context_meta("context", "héllo\nworld");
        assert_eq!(
            short,
            ContextMeta {
                name: "context".to_owned(),
                kind: "str".to_owned(),
                length_chars: 11,
                preview: "héllo\nworld".to_owned(),
            }
        );
        let text = "é".repeat(1_000);
        let long = context_meta("context_1", &text);
        assert_eq!(long.length_chars, 1_000);
        assert_eq!(long.preview, format!("{}...", "é".repeat(PREVIEW_CHARS)));
        assert_eq!(context_meta("c", "").preview, "");
    }

    #[test]
    fn first_message_has_metadata_only() {
        let mut text = String::from("HEAD-MARK ");
        while text.len() < 1 << 20 {
            text.push_str("filler line number with words\n");
        }
        text.push_str("TAIL-MARK");
        let meta = context_meta("context", &text);
        let m = first_user_message("Find the secret code.", std::slice::from_ref(&meta));
        assert!(m.starts_with("Task:\nFind the secret code.\n\n"));
        assert!(m.contains("HEAD-MARK"));
        assert!(!m.contains("TAIL-MARK"));
        assert!(m.len() < 2_000, "{}", m.len());
        assert!(m.contains(&format!(
            "- `context`: str, {} characters; preview: ",
            meta.length_chars
        )));
        assert!(m.contains("first characters only"));
        assert!(m.contains("...\""));
        assert!(m.ends_with("finish with FINAL(...) or FINAL_VAR(...)."));

        // A hand-built meta with a huge preview is capped anyway.
        let sneaky = ContextMeta {
            preview: text.clone(),
            ..meta
        };
        let m = first_user_message("t", &[sneaky]);
        assert!(!m.contains("TAIL-MARK"));
        assert!(m.len() < 2_000);
    }

    #[test]
    fn first_message_several_and_no_contexts() {
        let m = first_user_message(
            "Compare.",
            &[
                context_meta("context_0", "a\"b"),
                context_meta("context_1", "xyz"),
            ],
        );
        assert!(m.contains("- `context_0`: str, 3 characters; preview: \"a\\\"b\"\n"));
        assert!(m.contains("- `context_1`: str, 3 characters; preview: \"xyz\"\n"));
        let m = first_user_message("Say hi.", &[]);
        assert!(m.contains("No context was given"));
    }

    #[test]
    fn truncate_output_rules() {
        assert_eq!(truncate_output("short", 10), ("short".to_owned(), false));
        assert_eq!(
            truncate_output("exactly10!", 10),
            ("exactly10!".to_owned(), false)
        );
        let text = format!("{}{}", "a".repeat(10), "b".repeat(12_355));
        let (out, cut) = truncate_output(&text, 20);
        assert!(cut);
        assert_eq!(
            out,
            format!(
                "aaaaaaaaaa\n[... 12345 characters omitted ...]\n{}",
                "b".repeat(10)
            )
        );
        // Char boundaries with multi-byte text.
        let (out, cut) = truncate_output(&"日本語".repeat(10), 5);
        assert!(cut);
        assert_eq!(out, "日本\n[... 25 characters omitted ...]\n日本語");
        let (out, cut) = truncate_output("abc", 0);
        assert!(cut);
        assert_eq!(out, "[... 3 characters omitted ...]");
        // Lines are not glued to the marker twice.
        let (out, _) = truncate_output("ab\ncdef\ngh", 6);
        assert_eq!(out, "ab\n[... 4 characters omitted ...]\ngh");
    }

    #[test]
    fn observation_iterations_scenario() {
        let o = observation(3, 20, &[report("X = 3\n")], &budget(17));
        assert_eq!(
            o,
            "[block 1/1]\nstdout:\nX = 3\n\n[turn 3/20] remaining: 17 turns"
        );
    }

    #[test]
    fn observation_full_layout() {
        let traceback: String = (1..=20).map(|i| format!("  line {i}\n")).collect();
        let executions = [
            report("N: 3 TOTAL: 7\n"),
            ExecutionReport {
                stdout: String::new(),
                stderr: "warning: careful".to_owned(),
                error: Some(("ValueError".to_owned(), "bad value\n".to_owned(), traceback)),
                truncated: false,
                final_value: None,
            },
            report(""),
            ExecutionReport {
                final_value: Some("42".to_owned()),
                ..report("done")
            },
        ];
        let left = BudgetLeft {
            iterations: 1,
            tokens: Some(5_000),
            cost_usd: Some(0.5),
            seconds: Some(30),
        };
        let o = observation(19, 20, &executions, &left);
        let expected = format!(
            "[block 1/4]\nstdout:\nN: 3 TOTAL: 7\n\n\
             [block 2/4]\nstderr:\nwarning: careful\nerror: ValueError: bad value\n\
             traceback (most recent call last):\n\
             [... 8 earlier traceback lines omitted ...]\n{}\n\n\
             [block 3/4]\n(no output)\n\n\
             [block 4/4]\nstdout:\ndone\nFINAL value: 42\n\n\
             [turn 19/20] remaining: 1 turns, 5000 tokens, $0.5000, 30 s\n\
             Your next reply is the last one: give the final answer with FINAL(...).",
            (9..=20)
                .map(|i| format!("  line {i}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(o, expected);
    }

    #[test]
    fn observation_caps_output() {
        let big = format!("X = 1\n{}X = 2\n", "y".repeat(100_000));
        let o = observation(1, 5, &[report(&big)], &budget(4));
        assert!(o.starts_with("[block 1/1]\nstdout (truncated):\nX = 1\n"));
        assert!(o.contains(&format!(
            "[... {} characters omitted ...]",
            big.chars().count() - STDOUT_CHARS
        )));
        assert!(o.contains("X = 2\n\n[turn 1/5]"));
        assert!(o.len() < STDOUT_CHARS + 200);

        let sandbox_cut = ExecutionReport {
            truncated: true,
            ..report("partial")
        };
        let o = observation(1, 5, &[sandbox_cut], &budget(4));
        assert!(o.contains("stdout (truncated):\npartial\n"));
    }

    #[test]
    fn observation_without_code() {
        let o = observation(2, 20, &[], &budget(18));
        assert!(o.starts_with("Your reply had no ```repl code block"));
        assert!(o.ends_with("[turn 2/20] remaining: 18 turns"));
    }
}
