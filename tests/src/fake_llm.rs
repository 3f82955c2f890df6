//! The shared deterministic fake model server (`<bench>/fake_llm.py`, an
//! OpenAI-compatible Chat Completions server playing scripted RLM
//! trajectories) started as a child process, plus the workload data and
//! expected answers from the fake's own generator (`fakellm.data`), so what
//! the tests send and what they expect always match what the fake plays.
//!
//! The bench directory is read-only for the project. It is found through
//! `RLM_SHARED_BENCH`, else `<repo>/../shared/bench`; a missing one fails the
//! test with that instruction (never a silent skip).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The shared bench directory (holds `fake_llm.py` and `fakellm/`).
pub fn bench_dir() -> PathBuf {
    let dir = match std::env::var_os("RLM_SHARED_BENCH") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench"),
    };
    let script = dir.join("fake_llm.py");
    assert!(
        script.is_file() && dir.join("fakellm/data.py").is_file(),
        "the shared fake model server is missing: no fake_llm.py / fakellm/data.py in {} \
         (set RLM_SHARED_BENCH to the bench directory, by default <repo>/../shared/bench)",
        dir.display()
    );
    dir.canonicalize().unwrap_or(dir)
}

/// The project's extra fake scenarios (`tests/fake_scenarios`), for
/// [`FakeLlm::start`] and [`scenario_expected`].
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fake_scenarios")
}

/// Runs `code` with python3, the bench directory first on `sys.path`
/// (`from fakellm import data` works) and `args` as the list `ARGS`;
/// returns its stdout.
pub fn python(code: &str, args: &[&str], extra_scenarios: Option<&Path>) -> String {
    let prelude = "import sys, json\nsys.path.insert(0, sys.argv[1])\nARGS = sys.argv[2:]\n";
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(format!("{prelude}{code}"))
        .arg(bench_dir())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = extra_scenarios {
        command.env("FAKE_LLM_EXTRA_SCENARIOS", dir);
    }
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("running python3 (needed by the fake model): {err}"));
    assert!(
        output.status.success(),
        "python3 failed ({}):\n{code}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("python output is UTF-8")
}

/// Like [`python`], for code that prints one JSON value on its last line.
pub fn python_json(code: &str, args: &[&str], extra_scenarios: Option<&Path>) -> Value {
    let out = python(code, args, extra_scenarios);
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|err| panic!("python printed no JSON ({err}): {out}"))
}

/// Writes `data.needle_context(n_bytes, seed)` to `path`; returns the code
/// hidden in it.
pub fn needle_context_file(n_bytes: usize, seed: u64, path: &Path) -> String {
    let code = "from fakellm import data\n\
                text, code = data.needle_context(int(ARGS[0]), int(ARGS[1]))\n\
                open(ARGS[2], 'w', encoding='utf-8').write(text)\n\
                print(json.dumps(code))";
    let path = path.display().to_string();
    let value = python_json(
        code,
        &[&n_bytes.to_string(), &seed.to_string(), &path],
        None,
    );
    value.as_str().expect("needle code").to_owned()
}

/// `data.fanout_chunks(k, chunk_chars, seed)` as a JSON array text (for a
/// `CONTEXT_FORMAT_JSON` context), with the per-chunk counts.
pub fn fanout_chunks_json(k: usize, chunk_chars: usize, seed: u64) -> (String, Vec<u64>) {
    let code = "from fakellm import data\n\
                chunks, counts = data.fanout_chunks(int(ARGS[0]), int(ARGS[1]), int(ARGS[2]))\n\
                print(json.dumps({'text': json.dumps(chunks), 'counts': counts}))";
    let value = python_json(
        code,
        &[&k.to_string(), &chunk_chars.to_string(), &seed.to_string()],
        None,
    );
    let text = value["text"].as_str().expect("chunks text").to_owned();
    let counts = value["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .map(|c| c.as_u64().expect("count"))
        .collect();
    (text, counts)
}

/// `data.expected_answer(scenario, params)` for the built-in scenarios.
pub fn expected_answer(scenario: &str, params: &Value) -> String {
    let code = "from fakellm import data\n\
                print(json.dumps(data.expected_answer(ARGS[0], json.loads(ARGS[1]))))";
    python_json(code, &[scenario, &params.to_string()], None)
        .as_str()
        .expect("expected answer")
        .to_owned()
}

/// `Scenario.expected()` of any registered scenario, extra ones included
/// (loaded from `extra_scenarios` as fake_llm.py loads them).
pub fn scenario_expected(scenario: &str, params: &Value, extra_scenarios: Option<&Path>) -> String {
    let code = "import os\n\
                import fake_llm\n\
                if os.environ.get('FAKE_LLM_EXTRA_SCENARIOS'):\n    \
                    fake_llm.load_extra_scenarios(os.environ['FAKE_LLM_EXTRA_SCENARIOS'])\n\
                from fakellm import scenarios\n\
                print(json.dumps(scenarios.make(ARGS[0], json.loads(ARGS[1])).expected()))";
    python_json(code, &[scenario, &params.to_string()], extra_scenarios)
        .as_str()
        .expect("expected answer")
        .to_owned()
}

/// The benchmark's question for `scenario` (`adapters/_common.py`
/// QUESTIONS; the iterations one formatted with `params.n`).
pub fn question(scenario: &str, params: &Value) -> String {
    let code = "import os\n\
                sys.path.insert(0, os.path.join(sys.argv[1], 'adapters'))\n\
                import _common\n\
                params = json.loads(ARGS[1])\n\
                q = _common.QUESTIONS[ARGS[0]]\n\
                if ARGS[0] == 'iterations':\n    q = q.format(n=int(params.get('n', 20)))\n\
                print(json.dumps(q))";
    python_json(code, &[scenario, &params.to_string()], None)
        .as_str()
        .expect("question")
        .to_owned()
}

/// The context the benchmark gives the iterations scenario (it needs none).
pub const ITERATIONS_CONTEXT: &str = "Counter task: no data; follow the query.";

/// A running `fake_llm.py --dialect generic`; killed on drop.
pub struct FakeLlm {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl FakeLlm {
    /// Starts the fake on a free port (the `echo` scenario until [`reset`]),
    /// with the scenarios of `extra_scenarios` registered, and waits for
    /// `GET /health`.
    ///
    /// [`reset`]: FakeLlm::reset
    pub async fn start(extra_scenarios: Option<&Path>) -> Self {
        let bench = bench_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let log = std::fs::File::create(dir.path().join("fake_llm.log")).expect("fake log");
        let mut command = Command::new("python3");
        command
            .arg(bench.join("fake_llm.py"))
            .args(["--host", "127.0.0.1", "--port", "0", "--dialect", "generic"])
            .arg("--port-file")
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        if let Some(extra) = extra_scenarios {
            assert!(extra.is_dir(), "no scenario folder {}", extra.display());
            command.env("FAKE_LLM_EXTRA_SCENARIOS", extra);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("starting python3 fake_llm.py: {err}"));
        let mut fake = Self {
            child: Some(child),
            port: 0,
            dir,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = fake.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "fake_llm.py exited with {status}; log:\n{}",
                    fake.log_text()
                );
            }
            if fake.port == 0
                && let Ok(text) = std::fs::read_to_string(&port_file)
            {
                fake.port = text.trim().parse().unwrap_or(0);
            }
            if fake.port != 0 {
                let health = fake
                    .http
                    .get(format!("{}/health", fake.root_url()))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                if matches!(health, Ok(ref r) if r.status().is_success()) {
                    return fake;
                }
            }
            assert!(
                Instant::now() < deadline,
                "fake_llm.py never answered /health; log:\n{}",
                fake.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:P` (control endpoints).
    pub fn root_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:P/v1`, the OpenAI base URL.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.root_url())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fake_llm.log")).unwrap_or_default()
    }

    /// `POST /control/reset`: selects `scenario` with `params` and
    /// `latency_ms` per call, dialect `generic`, and clears the counters.
    pub async fn reset(&self, scenario: &str, params: Value, latency_ms: f64) -> Value {
        let body = json!({
            "scenario": scenario,
            "params": params,
            "dialect": "generic",
            "latency_ms": latency_ms,
        });
        let response = self
            .http
            .post(format!("{}/control/reset", self.root_url()))
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|err| panic!("POST /control/reset: {err}"));
        let status = response.status();
        let text = response.text().await.expect("reset body");
        assert!(
            status.is_success(),
            "reset to {scenario} failed: {status}: {text}\nlog:\n{}",
            self.log_text()
        );
        serde_json::from_str(&text).expect("reset JSON")
    }

    /// `GET /control/stats`: counters since the last reset (`requests`,
    /// `root_calls`, `sub_calls`, `llm_calls`, `unmatched`, `errors`,
    /// `prompt_tokens`, `completion_tokens`, `bytes_in`, `max_in_flight`,
    /// `notes`, ...).
    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/control/stats", self.root_url()))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET /control/stats: {err}"))
            .json()
            .await
            .expect("stats JSON")
    }

    /// Asserts the fake saw a clean run: no protocol notes, no unmatched
    /// calls, no server errors. Returns the stats.
    pub async fn assert_clean(&self) -> Value {
        let stats = self.stats().await;
        assert_eq!(stats["notes"], json!([]), "fake model notes: {stats:#}");
        assert_eq!(stats["unmatched"], 0, "unmatched calls: {stats:#}");
        assert_eq!(stats["errors"], 0, "fake server errors: {stats:#}");
        stats
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log_text();
            if !log.trim().is_empty() {
                eprintln!("--- fake_llm.py log ---\n{log}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn chat(fake: &FakeLlm, messages: Value) -> String {
        let body: Value = fake
            .http
            .post(format!("{}/chat/completions", fake.base_url()))
            .json(&json!({"model": "fake-rlm", "messages": messages}))
            .send()
            .await
            .expect("chat")
            .json()
            .await
            .expect("chat JSON");
        body["choices"][0]["message"]["content"]
            .as_str()
            .expect("content")
            .to_owned()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn fake_starts_resets_and_counts() {
        let fake = FakeLlm::start(None).await;
        let reset = fake.reset("iterations", json!({"n": 3}), 0.0).await;
        assert_eq!(reset["scenario"], "iterations");
        let reply = chat(
            &fake,
            json!([{"role": "system", "content": "sys"}, {"role": "user", "content": "go"}]),
        )
        .await;
        assert!(reply.contains("```repl\nx = 1"), "{reply}");
        let stats = fake.stats().await;
        assert_eq!(stats["root_calls"], 1, "{stats:#}");
        assert_eq!(stats["llm_calls"], 1, "{stats:#}");
    }

    #[test]
    fn generator_helpers_agree_with_the_fake() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("needle.txt");
        let code = needle_context_file(10_000, 1234, &path);
        let text = std::fs::read_to_string(&path).expect("needle file");
        assert!(text.contains(&format!("secret code: {code}")));
        assert!(text.len() <= 10_000);
        assert_eq!(expected_answer("needle", &json!({"n": 10_000})), code);
        let (chunks, counts) = fanout_chunks_json(5, 1500, 99);
        let parsed: Vec<String> = serde_json::from_str(&chunks).expect("chunks JSON");
        assert_eq!(parsed.len(), 5);
        let total: u64 = counts.iter().sum();
        assert_eq!(
            expected_answer("fanout", &json!({"k": 5})),
            total.to_string()
        );
        assert_eq!(expected_answer("iterations", &json!({"n": 7})), "7");
        assert!(question("iterations", &json!({"n": 7})).contains("7 turns"));
        assert_eq!(
            scenario_expected("recursion", &json!({}), Some(&scenarios_dir())),
            "98"
        );
    }

    /// Plays the recursion scenario by hand, as the engine would drive it.
    #[tokio::test(flavor = "multi_thread")]
    async fn recursion_scenario_plays_its_tree() {
        let fake = FakeLlm::start(Some(&scenarios_dir())).await;
        fake.reset("recursion", json!({"values": [3, 5, 7]}), 0.0)
            .await;
        let sys = "You solve a task ... REPL ...";
        let root0 = chat(
            &fake,
            json!([{"role": "system", "content": sys},
                   {"role": "user", "content": "Task:\nSum it.\n\nNo context was given for this task.\n"}]),
        )
        .await;
        assert!(root0.contains("rlm_query_batched(prompts)"), "{root0}");
        assert!(root0.contains("RECURSE_L1[3]"), "{root0}");
        let l1 = chat(
            &fake,
            json!([{"role": "system", "content": sys},
                   {"role": "user", "content": "Task:\nRECURSE_L1[3]\n\nNo context was given for this task.\n"}]),
        )
        .await;
        assert!(l1.contains("rlm_query(\"RECURSE_L2[3]\")"), "{l1}");
        assert!(l1.contains("FINAL(int(str(r).strip()) + 3)"), "{l1}");
        let l2_first =
            json!({"role": "user", "content": "Task:\nRECURSE_L2[3]\n\nNo context was given.\n"});
        let l2 = chat(
            &fake,
            json!([{"role": "system", "content": sys}, l2_first.clone()]),
        )
        .await;
        assert!(l2.contains("llm_query(\"SQUARE[3]\")"), "{l2}");
        let square = chat(&fake, json!([{"role": "user", "content": "SQUARE[3]"}])).await;
        assert_eq!(square, "9");
        let l2_final = chat(
            &fake,
            json!([{"role": "system", "content": sys}, l2_first,
                   {"role": "assistant", "content": l2},
                   {"role": "user", "content": "Output:\nSQ: 9\n"}]),
        )
        .await;
        assert_eq!(l2_final, "FINAL(9)");
        let root1 = chat(
            &fake,
            json!([{"role": "system", "content": sys},
                   {"role": "user", "content": "Task:\nSum it.\n"},
                   {"role": "assistant", "content": root0},
                   {"role": "user", "content": "ANSWERS: ['12', '30', '56']\nTOTAL: 98\n"}]),
        )
        .await;
        assert_eq!(root1, "FINAL(98)");
        let stats = fake.assert_clean().await;
        assert_eq!(stats["root_calls"], 2, "{stats:#}");
        assert_eq!(stats["sub_calls"], 4, "{stats:#}");

        // A RECURSE task sent as a plain call (rlm_query degraded) is noted.
        chat(&fake, json!([{"role": "user", "content": "RECURSE_L2[5]"}])).await;
        let stats = fake.stats().await;
        assert_eq!(
            stats["notes"].as_array().map(Vec::len),
            Some(1),
            "{stats:#}"
        );
    }
}
