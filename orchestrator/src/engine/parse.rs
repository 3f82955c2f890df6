//! Reading the model's answer: the code blocks to run and a text-level final
//! answer.
//!
//! Both functions work on `&str`, scan line by line and only ever split the
//! text at ASCII delimiters (newlines, fences, parentheses, quotes), so every
//! slice lies on a char boundary. Neither can panic on any input, and both run
//! in time linear in the input (the `FINAL(` search tries at most
//! [`MAX_FINAL_ATTEMPTS`] candidates, each a linear scan).
//!
//! # Fences
//!
//! A fence line is, after optional leading spaces/tabs, a run of at least three
//! backticks or at least three tildes followed by an optional info string (for
//! backtick fences the info string may not contain a backtick — such a line is
//! inline code, not a fence). The block ends at the first later line that is,
//! after optional leading spaces/tabs, a run of the *same* character at least
//! as long as the opening run, followed only by whitespace. A block that is
//! never closed runs to the end of the text (`unterminated`).
//!
//! Every fenced block, whatever its language, is "code" for the purpose of
//! [`final_answer`]; only blocks whose info string is exactly `repl`, `python`
//! or `py` (ASCII case-insensitive, surrounding whitespace ignored) are
//! returned by [`code_blocks`]. Line endings may be `\n` or `\r\n`.

/// Info strings (compared ASCII case-insensitively) of blocks that are run.
const RUNNABLE_LANGUAGES: [&str; 3] = ["repl", "python", "py"];

/// How many text-level `FINAL(`/`FINAL_VAR(` candidates that turn out to be
/// malformed are tried before [`final_answer`] gives up. Bounds the work on
/// hostile input (each attempt is a linear scan) to a constant times the text
/// length.
pub const MAX_FINAL_ATTEMPTS: usize = 16;

/// One fenced block of code the model asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeBlock {
    /// The info string, lower-cased: `"repl"`, `"python"` or `"py"`.
    pub language: String,
    /// The text between the fence lines, exactly as written (the line break
    /// before the closing fence is not part of it). For an unterminated block,
    /// everything after the opening fence line.
    pub code: String,
    /// The block was never closed (the model's output was probably cut off).
    pub unterminated: bool,
}

/// A final answer written in the prose of the model's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalAnswer {
    /// `FINAL(value)`: the answer itself.
    Value(String),
    /// `FINAL_VAR(name)`: the answer is the REPL variable `name`.
    Var(String),
}

/// The fenced blocks of `text` that are code to run, in order.
///
/// See the module documentation for what counts as a fence. Blocks in other
/// languages (` ```json `, a bare ` ``` `, ...) are skipped, but they are still
/// tracked so that a ` ```repl ` line inside them does not open a block.
pub fn code_blocks(text: &str) -> Vec<CodeBlock> {
    segments(text)
        .into_iter()
        .filter_map(|segment| match segment {
            Segment::Fence {
                info,
                body,
                terminated,
            } if is_runnable(info) => Some(CodeBlock {
                language: info.to_ascii_lowercase(),
                code: body.to_owned(),
                unterminated: !terminated,
            }),
            _ => None,
        })
        .collect()
}

/// The first text-level final answer in `text`, if any.
///
/// Accepted, on a line **outside every fenced block** (of any language):
///
/// - The line starts (after optional spaces/tabs) with exactly `FINAL(` —
///   upper case, no space before the parenthesis. The argument runs to the
///   balancing `)`; it may span lines (but not into a fenced block) and
///   contain nested parentheses. Parentheses inside string literals (`"..."`,
///   `'...'`, triple-quoted, optionally with an `r`/`b`/`f`/`u` prefix) do not
///   count; a quote right after a letter or digit is an apostrophe (`don't`),
///   not a string. If no balanced end is found that way, parentheses are
///   matched ignoring quotes altogether. The argument is trimmed; if it is
///   then a single string literal, one level of quotes is removed and the
///   escapes `\\ \" \' \n \t` are decoded (`FINAL("abc")` → `abc`); otherwise
///   it is kept as written (`FINAL(42)` → `42`, `FINAL(The answer is 5)` →
///   `The answer is 5`, `FINAL("a" + "b")` → `"a" + "b"`). Text after the
///   closing parenthesis is ignored.
/// - The line starts (after optional spaces/tabs) with `FINAL_VAR(`, and the
///   same line has a `)` after it; the text between, trimmed and with one
///   level of matching quotes removed, must be a Python identifier (letters,
///   digits and `_`, not starting with a digit) → [`FinalAnswer::Var`].
///
/// Candidates that are malformed (unbalanced, invalid variable name) are
/// skipped; after [`MAX_FINAL_ATTEMPTS`] of them the search stops. The first
/// accepted candidate wins. `FINAL(...)` inside a code block is not a
/// text-level final: the REPL's own `FINAL()` function handles that.
pub fn final_answer(text: &str) -> Option<FinalAnswer> {
    let mut attempts = 0usize;
    for segment in segments(text) {
        let Segment::Prose { start, end } = segment else {
            continue;
        };
        let prose = text.get(start..end).unwrap_or_default();
        let mut offset = 0usize;
        for raw in prose.split_inclusive('\n') {
            let line_start = offset;
            offset += raw.len();
            let line = strip_eol(raw);
            let trimmed = line.trim_start_matches([' ', '\t']);
            let indent = line.len() - trimmed.len();
            if let Some(rest) = trimmed.strip_prefix("FINAL_VAR(") {
                attempts += 1;
                if let Some(name) = final_var_name(rest) {
                    return Some(FinalAnswer::Var(name));
                }
            } else if trimmed.starts_with("FINAL(") {
                attempts += 1;
                let arg_start = line_start + indent + "FINAL(".len();
                let arg = prose.get(arg_start..).unwrap_or_default();
                if let Some(value) = final_value(arg) {
                    return Some(FinalAnswer::Value(value));
                }
            } else {
                continue;
            }
            if attempts >= MAX_FINAL_ATTEMPTS {
                return None;
            }
        }
    }
    None
}

/// A piece of the model's reply: prose lines, or a fenced block.
enum Segment<'a> {
    /// Byte range of consecutive whole lines outside any fence.
    Prose { start: usize, end: usize },
    /// A fenced block (fence lines excluded).
    Fence {
        info: &'a str,
        body: &'a str,
        terminated: bool,
    },
}

/// Splits `text` into prose and fenced blocks, in order. One pass, linear.
fn segments(text: &str) -> Vec<Segment<'_>> {
    struct Open<'a> {
        ch: u8,
        len: usize,
        info: &'a str,
        body_start: usize,
    }
    let mut out = Vec::new();
    let mut open: Option<Open<'_>> = None;
    let mut prose_start = 0usize;
    let mut pos = 0usize;
    for raw in text.split_inclusive('\n') {
        let line_start = pos;
        pos += raw.len();
        let line = strip_eol(raw);
        match &open {
            None => {
                if let Some((ch, len, info)) = fence_open(line) {
                    if line_start > prose_start {
                        out.push(Segment::Prose {
                            start: prose_start,
                            end: line_start,
                        });
                    }
                    open = Some(Open {
                        ch,
                        len,
                        info,
                        body_start: pos,
                    });
                }
            }
            Some(o) => {
                if is_fence_close(line, o.ch, o.len) {
                    let body = text.get(o.body_start..line_start).unwrap_or_default();
                    out.push(Segment::Fence {
                        info: o.info,
                        body: strip_eol(body),
                        terminated: true,
                    });
                    open = None;
                    prose_start = pos;
                }
            }
        }
    }
    match open {
        Some(o) => out.push(Segment::Fence {
            info: o.info,
            body: text.get(o.body_start..).unwrap_or_default(),
            terminated: false,
        }),
        None if prose_start < text.len() => out.push(Segment::Prose {
            start: prose_start,
            end: text.len(),
        }),
        None => {}
    }
    out
}

/// Removes one trailing `\n` or `\r\n`.
fn strip_eol(line: &str) -> &str {
    match line.strip_suffix('\n') {
        Some(l) => l.strip_suffix('\r').unwrap_or(l),
        None => line,
    }
}

/// `(fence char, run length, trimmed info string)` if `line` opens a fence.
fn fence_open(line: &str) -> Option<(u8, usize, &str)> {
    let t = line.trim_start_matches([' ', '\t']);
    let ch = *t.as_bytes().first()?;
    if ch != b'`' && ch != b'~' {
        return None;
    }
    let len = t.bytes().take_while(|&b| b == ch).count();
    if len < 3 {
        return None;
    }
    // `len` counts ASCII bytes, so it is a char boundary.
    let info = t.get(len..)?.trim();
    if ch == b'`' && info.contains('`') {
        return None;
    }
    Some((ch, len, info))
}

/// Whether `line` closes a fence of `len` × `ch`.
fn is_fence_close(line: &str, ch: u8, len: usize) -> bool {
    let t = line.trim_start_matches([' ', '\t']);
    let run = t.bytes().take_while(|&b| b == ch).count();
    run >= len && t.get(run..).is_some_and(|rest| rest.trim().is_empty())
}

fn is_runnable(info: &str) -> bool {
    RUNNABLE_LANGUAGES
        .iter()
        .any(|lang| info.eq_ignore_ascii_case(lang))
}

/// The variable name of `FINAL_VAR(` + `rest` (rest of the line).
fn final_var_name(rest: &str) -> Option<String> {
    let close = rest.find(')')?;
    let inner = rest.get(..close)?.trim();
    let inner = strip_matching_quotes(inner).unwrap_or(inner);
    is_identifier(inner).then(|| inner.to_owned())
}

fn strip_matching_quotes(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let (&first, &last) = (b.first()?, b.last()?);
    if b.len() >= 2 && first == last && (first == b'"' || first == b'\'') {
        s.get(1..s.len() - 1)
    } else {
        None
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// The value of `FINAL(` + `arg` (the text after the opening parenthesis, up
/// to the end of the prose segment), or `None` if it is unbalanced.
fn final_value(arg: &str) -> Option<String> {
    let bytes = arg.as_bytes();
    let close = matching_paren(bytes, true).or_else(|| matching_paren(bytes, false))?;
    // `close` is the index of an ASCII ')', hence a char boundary.
    let content = arg.get(..close)?.trim();
    Some(single_string_literal(content).unwrap_or_else(|| content.to_owned()))
}

/// Index of the `)` that brings the depth (starting at 1) back to 0.
fn matching_paren(s: &[u8], quote_aware: bool) -> Option<usize> {
    let mut depth = 1usize;
    let mut i = 0usize;
    while let Some(&b) = s.get(i) {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b'"' | b'\'' if quote_aware && opens_string(s, i) => {
                i = skip_string(s, i)?;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether the quote at `i` starts a string literal rather than being an
/// apostrophe inside a word.
fn opens_string(s: &[u8], i: usize) -> bool {
    let word_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    let Some(prev) = i.checked_sub(1).and_then(|p| s.get(p)).copied() else {
        return true;
    };
    if !word_byte(prev) {
        return true;
    }
    // A string prefix such as r"..", b'..', f"..": one prefix letter that is
    // itself at the start of a token.
    let before = i.checked_sub(2).and_then(|p| s.get(p)).copied();
    b"rRbBfFuU".contains(&prev) && before.is_none_or(|b| !word_byte(b))
}

/// Index just past the string literal starting at `i`, or `None` if it is
/// not closed. A single-quoted string also ends at a line break (Python does
/// not allow one there; in prose it was an unpaired quote).
fn skip_string(s: &[u8], i: usize) -> Option<usize> {
    let q = *s.get(i)?;
    let triple = s.get(i + 1) == Some(&q) && s.get(i + 2) == Some(&q);
    let mut j = if triple { i + 3 } else { i + 1 };
    while let Some(&b) = s.get(j) {
        if b == b'\\' {
            j += 2;
        } else if b == q {
            if !triple {
                return Some(j + 1);
            }
            if s.get(j + 1) == Some(&q) && s.get(j + 2) == Some(&q) {
                return Some(j + 3);
            }
            j += 1;
        } else if b == b'\n' && !triple {
            return Some(j);
        } else {
            j += 1;
        }
    }
    None
}

/// If `s` is exactly one string literal, its decoded content.
fn single_string_literal(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let q = *b.first()?;
    if q != b'"' && q != b'\'' {
        return None;
    }
    let triple = [q; 3];
    if b.len() >= 6 && b.starts_with(&triple) && b.ends_with(&triple) {
        let inner = s.get(3..s.len() - 3)?;
        if !inner.as_bytes().windows(3).any(|w| w == triple) {
            return Some(unescape(inner));
        }
    }
    if b.len() < 2 || b.last() != Some(&q) {
        return None;
    }
    let inner = s.get(1..s.len() - 1)?;
    let ib = inner.as_bytes();
    let mut i = 0usize;
    while let Some(&c) = ib.get(i) {
        if c == b'\\' {
            if i + 1 >= ib.len() {
                return None; // the closing quote is escaped
            }
            i += 2;
        } else if c == q {
            return None; // more than one literal, e.g. "a" + "b"
        } else {
            i += 1;
        }
    }
    Some(unescape(inner))
}

/// Decodes `\\ \" \' \n \t`; any other backslash is kept as written.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(e @ ('\\' | '"' | '\'')) => out.push(e),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> Option<FinalAnswer> {
        Some(FinalAnswer::Value(s.to_owned()))
    }

    fn block(language: &str, code: &str, unterminated: bool) -> CodeBlock {
        CodeBlock {
            language: language.to_owned(),
            code: code.to_owned(),
            unterminated,
        }
    }

    // Exact replies of the shared fake model's `generic` dialect
    // (render_code: "```repl\n{code}\n```", render_final: "FINAL({value})").
    const FAKE_ITER_0: &str = "```repl\nx = 1\nprint(\"X =\", x)\n```";
    const FAKE_ITER_N: &str = "```repl\nx = x + 1\nprint(\"X =\", x)\n```";
    const FAKE_FANOUT_0: &str = "```repl\nprompts = ['COUNT_WORD[zebra]\\n' + c for c in context]\nsub_answers = llm_query_batched(prompts)\nimport re\ntotal = sum(int(re.search(r\"-?\\d+\", str(a)).group()) for a in sub_answers)\nprint(\"N:\", len(sub_answers), \"TOTAL:\", total)\n```";
    const FAKE_NEEDLE_0: &str = "```repl\nimport re\nm = re.search(r\"secret code: ([A-Z]{3}-\\d{4})\", context)\nprint(\"FOUND:\", m.group(1) if m else \"NONE\")\n```";

    #[test]
    fn fake_generic_code_replies() {
        assert_eq!(
            code_blocks(FAKE_ITER_0),
            vec![block("repl", "x = 1\nprint(\"X =\", x)", false)]
        );
        assert_eq!(
            code_blocks(FAKE_ITER_N),
            vec![block("repl", "x = x + 1\nprint(\"X =\", x)", false)]
        );
        let fanout = code_blocks(FAKE_FANOUT_0);
        assert_eq!(fanout.len(), 1);
        assert!(
            fanout[0]
                .code
                .starts_with("prompts = ['COUNT_WORD[zebra]\\n' + c for c in context]\n")
        );
        assert!(
            fanout[0]
                .code
                .ends_with("print(\"N:\", len(sub_answers), \"TOTAL:\", total)")
        );
        assert!(!fanout[0].unterminated);
        let needle = code_blocks(FAKE_NEEDLE_0);
        assert_eq!(needle.len(), 1);
        assert_eq!(
            needle[0].code,
            "import re\nm = re.search(r\"secret code: ([A-Z]{3}-\\d{4})\", context)\nprint(\"FOUND:\", m.group(1) if m else \"NONE\")"
        );
        for reply in [FAKE_ITER_0, FAKE_ITER_N, FAKE_FANOUT_0, FAKE_NEEDLE_0] {
            assert_eq!(final_answer(reply), None, "{reply}");
        }
    }

    #[test]
    fn fake_generic_final_replies() {
        assert_eq!(final_answer("FINAL(7)"), value("7"));
        assert_eq!(final_answer("FINAL(ABC-1234)"), value("ABC-1234"));
        assert_eq!(final_answer("FINAL(20)"), value("20"));
        assert_eq!(final_answer("FINAL(NOT_FOUND)"), value("NOT_FOUND"));
        assert_eq!(code_blocks("FINAL(7)"), vec![]);
    }

    #[test]
    fn accepted_languages_and_fences() {
        let text = "intro\n```python\na = 1\n```\n``` PY  \nb = 2\n```\n~~~Repl\nc = 3\n~~~\n";
        assert_eq!(
            code_blocks(text),
            vec![
                block("python", "a = 1", false),
                block("py", "b = 2", false),
                block("repl", "c = 3", false),
            ]
        );
    }

    #[test]
    fn other_languages_are_not_code() {
        let text =
            "```json\n{\"a\": 1}\n```\n```\nplain\n```\n```python3\nx\n```\n```repl\nrun()\n```";
        assert_eq!(code_blocks(text), vec![block("repl", "run()", false)]);
    }

    #[test]
    fn repl_fence_inside_other_block_is_content() {
        let text = "````markdown\n```repl\nnot_run()\n```\n````\n```repl\nrun()\n```";
        assert_eq!(code_blocks(text), vec![block("repl", "run()", false)]);
    }

    #[test]
    fn closing_fence_needs_same_char_and_length() {
        let text = "````repl\na = '```'\n```\n~~~~\nb = 1\n`````\nafter";
        assert_eq!(
            code_blocks(text),
            vec![block("repl", "a = '```'\n```\n~~~~\nb = 1", false)]
        );
        let tildes = "~~~repl\nx = 1\n```\n~~~~  \n";
        assert_eq!(
            code_blocks(tildes),
            vec![block("repl", "x = 1\n```", false)]
        );
    }

    #[test]
    fn body_kept_exactly() {
        let text = "```repl\n\n    indented = 1\n\tif x:\n\t\tpass\n\n```";
        assert_eq!(
            code_blocks(text),
            vec![block(
                "repl",
                "\n    indented = 1\n\tif x:\n\t\tpass\n",
                false
            )]
        );
        assert_eq!(code_blocks("```repl\n```"), vec![block("repl", "", false)]);
    }

    #[test]
    fn inline_backticks_are_not_fences() {
        assert_eq!(code_blocks("```repl print(1)```\nx"), vec![]);
        assert_eq!(code_blocks("``repl\nx\n``"), vec![]);
    }

    #[test]
    fn unterminated_final_block_is_included() {
        let text = "```repl\na = 1\n```\nnow:\n```repl\nb = 2\nprint(b";
        assert_eq!(
            code_blocks(text),
            vec![
                block("repl", "a = 1", false),
                block("repl", "b = 2\nprint(b", true)
            ]
        );
        assert_eq!(code_blocks("```repl"), vec![block("repl", "", true)]);
        assert_eq!(
            code_blocks("```repl\nx = 1\n"),
            vec![block("repl", "x = 1\n", true)]
        );
    }

    #[test]
    fn crlf_line_endings() {
        let text = "Plan:\r\n```repl\r\nx = 1\r\nprint(x)\r\n```\r\nFINAL(  done  )\r\n";
        assert_eq!(
            code_blocks(text),
            vec![block("repl", "x = 1\r\nprint(x)", false)]
        );
        assert_eq!(final_answer(text), value("done"));
        assert_eq!(
            final_answer("FINAL_VAR(answer)\r\n"),
            Some(FinalAnswer::Var("answer".to_owned()))
        );
    }

    #[test]
    fn final_plain_values() {
        assert_eq!(final_answer("FINAL(42)"), value("42"));
        assert_eq!(
            final_answer("FINAL(The answer is 5)"),
            value("The answer is 5")
        );
        assert_eq!(final_answer("FINAL(\"abc\")"), value("abc"));
        assert_eq!(final_answer("FINAL('abc')"), value("abc"));
        assert_eq!(final_answer("FINAL(\"\"\"a\nb\"\"\")"), value("a\nb"));
        assert_eq!(
            final_answer("FINAL(\"a \\\"q\\\" \\n\")"),
            value("a \"q\" \n")
        );
        assert_eq!(final_answer("FINAL(\"a\" + \"b\")"), value("\"a\" + \"b\""));
        assert_eq!(final_answer("FINAL(\"abc\\\")"), value("\"abc\\\""));
        assert_eq!(final_answer("FINAL()"), value(""));
        assert_eq!(final_answer("FINAL(7). Done."), value("7"));
    }

    #[test]
    fn final_nested_multiline_and_quotes() {
        assert_eq!(final_answer("FINAL(f(g(1), (2)))"), value("f(g(1), (2))"));
        assert_eq!(
            final_answer("Done.\n  FINAL(line one (a)\nline two)\ntrailing (x)"),
            value("line one (a)\nline two")
        );
        assert_eq!(final_answer("FINAL(\"a ) b\")"), value("a ) b"));
        assert_eq!(final_answer("FINAL('(')"), value("("));
        assert_eq!(final_answer("FINAL(r\"x)\")"), value("r\"x)\""));
        // Apostrophes are not strings.
        assert_eq!(final_answer("FINAL(don't know)"), value("don't know"));
        assert_eq!(
            final_answer("FINAL(it's (probably) 5)\nok"),
            value("it's (probably) 5")
        );
        // An unpaired opening quote: falls back to quote-blind matching.
        assert_eq!(final_answer("FINAL(5 \" inches)"), value("5 \" inches"));
    }

    #[test]
    fn final_var() {
        assert_eq!(
            final_answer("FINAL_VAR(result)"),
            Some(FinalAnswer::Var("result".to_owned()))
        );
        assert_eq!(
            final_answer("   FINAL_VAR( \"my_var2\" )"),
            Some(FinalAnswer::Var("my_var2".to_owned()))
        );
        assert_eq!(final_answer("FINAL_VAR(2x)"), None);
        assert_eq!(final_answer("FINAL_VAR(a b)"), None);
        assert_eq!(final_answer("FINAL_VAR(a\n)"), None);
        assert_eq!(final_answer("FINAL_VAR(bad name)\nFINAL(ok)"), value("ok"));
    }

    #[test]
    fn final_position_rules() {
        assert_eq!(final_answer("The answer: FINAL(5)"), None);
        assert_eq!(final_answer("final(5)"), None);
        assert_eq!(final_answer("FINAL (5)"), None);
        assert_eq!(final_answer("`FINAL(5)`"), None);
        assert_eq!(final_answer("\t FINAL(5)"), value("5"));
    }

    #[test]
    fn first_final_wins() {
        assert_eq!(final_answer("FINAL(1)\nFINAL(2)"), value("1"));
        assert_eq!(
            final_answer("FINAL_VAR(x)\nFINAL(2)"),
            Some(FinalAnswer::Var("x".to_owned()))
        );
        // An unbalanced candidate is skipped.
        assert_eq!(final_answer("FINAL((1\n\nFINAL(2)"), value("2"));
    }

    #[test]
    fn final_inside_code_is_not_text_final() {
        assert_eq!(final_answer("```repl\nFINAL(1)\n```"), None);
        assert_eq!(final_answer("```\nFINAL(1)\n```\nFINAL(2)"), value("2"));
        assert_eq!(final_answer("```repl\nx = 1\nFINAL(x)"), None);
        // The argument does not run into a following block.
        assert_eq!(final_answer("FINAL(a\n```repl\n)\n```"), None);
    }

    #[test]
    fn hostile_inputs() {
        let backticks = "`".repeat(1 << 20);
        assert_eq!(code_blocks(&backticks), vec![]);
        assert_eq!(final_answer(&backticks), None);
        let two = format!("{backticks}repl\n{backticks}");
        // 1M backticks + "repl" opens a repl block; the next 1M close it.
        assert_eq!(code_blocks(&two), vec![block("repl", "", false)]);
        let fence = format!("{}repl\nx\n{}", "`".repeat(500_000), "`".repeat(500_001));
        assert_eq!(code_blocks(&fence), vec![block("repl", "x", false)]);

        let nested = format!("FINAL({}", "(".repeat(1 << 20));
        assert_eq!(final_answer(&nested), None);
        let quotes = format!("FINAL({}", "\"(".repeat(1 << 19));
        assert_eq!(final_answer(&quotes), None);
        let many = "FINAL((\n".repeat(100_000);
        assert_eq!(final_answer(&many), None);
        let many_then_ok = format!("{}FINAL(1)", "FINAL((\n".repeat(3));
        assert_eq!(final_answer(&many_then_ok), value("1"));
        let lines = "```repl\n".repeat(100_000);
        // The first line opens a block; the others are its body.
        let blocks = code_blocks(&lines);
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].unterminated);
        let pairs = "```repl\n```\n".repeat(100_000);
        assert_eq!(code_blocks(&pairs).len(), 100_000);

        // Multi-byte text right next to every delimiter.
        let utf = "é```repl\n```répl\nFINAL(é(ü)\"ß)\")€\n```\nFINAL_VAR(ñame)\n```rep€\nx\n";
        assert_eq!(final_answer(utf), Some(FinalAnswer::Var("ñame".to_owned())));
        assert_eq!(code_blocks(utf), vec![]);
        assert_eq!(final_answer("FINAL(日本語)"), value("日本語"));
        assert_eq!(final_answer("FINAL(\"日本\")"), value("日本"));
        assert_eq!(final_answer("FINAL(\\"), None);
        assert_eq!(final_answer("FINAL(\""), None);
        assert_eq!(final_answer("FINAL('''"), None);
        assert_eq!(final_answer("FINAL(\"\"\")"), value("\"\"\""));
        assert_eq!(final_answer(""), None);
        assert_eq!(code_blocks(""), vec![]);
        assert_eq!(code_blocks("\r\n\r\n\n"), vec![]);
    }
}

/// Property tests: any model reply parses without panicking, every block
/// is text of the reply, and a FINAL value is text of the reply too.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Replies built from the pieces parsers trip on: fences, FINAL forms,
    /// quotes, brackets, multi-byte characters and line ends.
    fn reply() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("```repl\n".to_owned()),
            Just("```python\n".to_owned()),
            Just("```\n".to_owned()),
            Just("````\n".to_owned()),
            Just("~~~\n".to_owned()),
            Just("FINAL(".to_owned()),
            Just("FINAL_VAR(".to_owned()),
            Just(")".to_owned()),
            Just("\"".to_owned()),
            Just("'".to_owned()),
            Just("(".to_owned()),
            Just("\r\n".to_owned()),
            Just("\n".to_owned()),
            Just("é漢🦀".to_owned()),
            "[ -~]{0,12}",
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        #[test]
        fn parsing_any_reply_is_total(text in reply()) {
            for block in code_blocks(&text) {
                prop_assert!(text.contains(block.code.as_str()));
            }
            match final_answer(&text) {
                Some(FinalAnswer::Value(v)) => prop_assert!(text.contains(v.trim())),
                Some(FinalAnswer::Var(name)) => prop_assert!(text.contains(name.as_str())),
                None => {}
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = code_blocks(&text);
            let _ = final_answer(&text);
        }
    }
}
