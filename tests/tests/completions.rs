//! Completions end to end: the real orchestrator and sandbox agent, driven by
//! a fake model. Most tests use the shared deterministic fake
//! (`fake_llm.py`, scripted RLM trajectories whose answers come from the same
//! generator as the data); tests about model failures, budgets and
//! cancellation use the in-process fault server, whose every reply the test
//! controls.
//!
//! Every test starts its own stack and fake and needs root (the agent
//! isolates sessions); run `cargo build --workspace --bins` first. Set
//! `RLM_E2E_DUMP_EVENTS=1` to print the events of every streamed completion.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use rlm_e2e::fake_llm::{self, FakeLlm};
use rlm_e2e::fault_llm::{FaultLlm, Reply, Request};
use rlm_e2e::sandbox::{Sandbox, processes_matching, require_root};
use rlm_e2e::{Stack, channel};
use rlm_proto::rlm::sandbox::v1 as sandbox_pb;
use rlm_proto::rlm::v1::completion_event::Event;
use rlm_proto::rlm::v1::context_input::Source;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::subcall_outcome::Outcome;
use rlm_proto::rlm::v1::*;
use serde_json::{Value, json};
use tonic::transport::Channel;

/// The model every test configures as the server default.
const MODEL: &str = "openai/fake-rlm";
/// Upper bound of one completion RPC in these tests (a hung engine fails).
const RPC_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// Set-up helpers
// ---------------------------------------------------------------------------

/// Orchestrator settings pointing at a fake model at `base_url`.
fn model_env(base_url: &str) -> Vec<(String, String)> {
    [
        ("RLM_MODEL", MODEL),
        ("RLM_LLM_BASE_URL", base_url),
        ("OPENAI_API_KEY", "e2e-test-key"),
        ("RLM_LLM_RETRY_BASE", "10ms"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

fn with(mut env: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

async fn start_stack(env: &[(String, String)]) -> Stack {
    require_root();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Stack::start(&env).await
}

async fn client(stack: &Stack) -> RlmServiceClient<Channel> {
    RlmServiceClient::new(
        channel(&stack.grpc_address)
            .await
            .expect("connect to the orchestrator"),
    )
    .max_decoding_message_size(64 << 20)
    .max_encoding_message_size(64 << 20)
}

async fn agent(stack: &Stack) -> Sandbox {
    Sandbox::connect(&stack.agent_address).await
}

fn text_context(text: &str) -> ContextInput {
    ContextInput {
        source: Some(Source::Text(text.to_owned())),
        format: ContextFormat::Text as i32,
    }
}

fn json_context(text: &str) -> ContextInput {
    ContextInput {
        source: Some(Source::Text(text.to_owned())),
        format: ContextFormat::Json as i32,
    }
}

fn stored_context(id: &str) -> ContextInput {
    ContextInput {
        source: Some(Source::ContextId(id.to_owned())),
        format: ContextFormat::Text as i32,
    }
}

fn spec(
    prompt: &str,
    contexts: Vec<ContextInput>,
    limits: Option<CompletionLimits>,
) -> CompletionSpec {
    CompletionSpec {
        prompt: prompt.to_owned(),
        contexts,
        limits,
        ..Default::default()
    }
}

fn seconds(secs: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: secs as i64,
        nanos: 0,
    })
}

/// Complete, bounded by [`RPC_TIMEOUT`]; panics on an RPC error.
async fn complete(
    client: &mut RlmServiceClient<Channel>,
    spec: CompletionSpec,
) -> CompletionResult {
    tokio::time::timeout(
        RPC_TIMEOUT,
        client.complete(CompleteRequest { spec: Some(spec) }),
    )
    .await
    .expect("Complete did not return within the test's bound")
    .expect("Complete RPC failed")
    .into_inner()
    .result
    .expect("CompleteResponse.result is set")
}

/// StreamComplete to its end, bounded by [`RPC_TIMEOUT`]: every event, and
/// the result carried by the last one.
async fn stream(
    client: &mut RlmServiceClient<Channel>,
    spec: CompletionSpec,
) -> (Vec<CompletionEvent>, CompletionResult) {
    let run = async {
        let mut responses = client
            .stream_complete(StreamCompleteRequest { spec: Some(spec) })
            .await
            .expect("StreamComplete RPC failed")
            .into_inner();
        let mut events = Vec::new();
        while let Some(message) = responses
            .message()
            .await
            .expect("StreamComplete stream failed")
        {
            events.push(message.event.expect("StreamCompleteResponse.event is set"));
        }
        events
    };
    let events = tokio::time::timeout(RPC_TIMEOUT, run)
        .await
        .expect("StreamComplete did not end within the test's bound");
    if std::env::var_os("RLM_E2E_DUMP_EVENTS").is_some() {
        eprintln!("{events:#?}");
    }
    let result = match events.last().and_then(|e| e.event.as_ref()) {
        Some(Event::Result(result)) => result.clone(),
        other => panic!(
            "the stream did not end with a result event (last: {other:?}); {} events",
            events.len()
        ),
    };
    (events, result)
}

/// Uploads a file in 1 MiB chunks; returns its content id.
async fn upload_file(client: &mut RlmServiceClient<Channel>, path: &Path) -> String {
    let data = std::fs::read(path).expect("reading the context file");
    let mut messages: Vec<UploadContextRequest> = data
        .chunks(1 << 20)
        .map(|chunk| UploadContextRequest {
            chunk: chunk.to_vec(),
            ..Default::default()
        })
        .collect();
    messages[0].total_size_bytes = data.len() as u64;
    let stored = client
        .upload_context(futures::stream::iter(messages))
        .await
        .expect("UploadContext")
        .into_inner();
    assert_eq!(stored.size_bytes, data.len() as u64);
    stored.context_id
}

fn usage(u: &Option<Usage>) -> Usage {
    u.unwrap_or_default()
}

/// Asserts a FINAL result with exactly `expected` as the answer.
fn assert_final(result: &CompletionResult, expected: &str) {
    assert_eq!(
        result.termination_reason(),
        TerminationReason::Final,
        "not FINAL: {result:#?}"
    );
    assert_eq!(result.answer, expected, "wrong answer: {result:#?}");
    assert!(
        !result.partial,
        "a FINAL answer is not partial: {result:#?}"
    );
    assert!(result.detail.is_empty(), "detail with FINAL: {result:#?}");
    assert!(!result.completion_id.is_empty() && !result.trajectory_id.is_empty());
}

/// Asserts a limit/failure ending: the reason, `partial`, a detail.
fn assert_ended_by(result: &CompletionResult, reason: TerminationReason) {
    assert_eq!(
        result.termination_reason(),
        reason,
        "wrong termination reason: {result:#?}"
    );
    assert!(result.partial, "partial must be set: {result:#?}");
    assert!(
        !result.detail.is_empty(),
        "detail must say why: {result:#?}"
    );
}

/// The fake's counter `key` as a number.
fn stat(stats: &Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {key} in {stats:#}"))
}

/// Sessions the agent holds for `completion_id`.
async fn sessions_of(sandbox: &mut Sandbox, completion_id: &str) -> Vec<sandbox_pb::SessionInfo> {
    sandbox
        .client
        .list_sessions(sandbox_pb::ListSessionsRequest {
            completion_id: completion_id.to_owned(),
        })
        .await
        .expect("ListSessions")
        .into_inner()
        .sessions
}

/// Polls until the agent holds no session of `completion_id`.
async fn assert_sessions_released(sandbox: &mut Sandbox, completion_id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = sessions_of(sandbox, completion_id).await;
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sessions of {completion_id} still alive {within:?} after the completion ended: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Session cgroups under the agent's cgroup parent `parent` (v1: the pids
/// hierarchy; v2: the unified one); `None` when no such parent exists.
fn session_cgroups(parent: &str) -> Option<usize> {
    [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
    ]
    .iter()
    .map(|base| Path::new(base).join(parent))
    .find(|dir| dir.is_dir())
    .map(|dir| {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .count()
            })
            .unwrap_or(0)
    })
}

// ---------------------------------------------------------------------------
// Event helpers
// ---------------------------------------------------------------------------

fn node_depth(node_id: &str) -> u32 {
    node_id.matches('.').count() as u32
}

/// Sequence numbers 1..n without gaps, one completion id, one result, last.
fn check_sequence(events: &[CompletionEvent]) {
    assert!(!events.is_empty(), "no events");
    let id = &events[0].completion_id;
    assert!(!id.is_empty(), "events carry no completion id");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.sequence,
            i as u64 + 1,
            "sequence gap at index {i}: {e:#?}"
        );
        assert_eq!(&e.completion_id, id, "completion id changed at {i}");
        assert!(e.event.is_some(), "event {i} has no payload");
        assert!(
            e.node_id == "0" || e.node_id.starts_with("0."),
            "bad node id at {i}: {e:#?}"
        );
        assert_eq!(e.depth, node_depth(&e.node_id), "depth of {}", e.node_id);
        if let Some(Event::Result(result)) = &e.event {
            assert_eq!(i, events.len() - 1, "a result before the end, at {i}");
            assert_eq!((e.depth, e.node_id.as_str()), (0, "0"));
            assert_eq!(&result.completion_id, id);
        }
    }
    assert!(matches!(
        events.last().and_then(|e| e.event.as_ref()),
        Some(Event::Result(_))
    ));
}

/// Causal order of a finished completion's events (see the module docs of
/// events.proto): per node, iteration_started(i) < its model call <
/// the code of iteration i; subcall_started < its model calls / child
/// nodes' events < subcall_finished < the end of the code block that made
/// the request; child node ids are `p.0`, `p.1`, ... in start order.
fn check_causal_order(events: &[CompletionEvent]) {
    check_sequence(events);
    #[derive(Default)]
    struct Iter {
        started: usize,
        model: Option<usize>,
        code: Vec<usize>,
    }
    let mut iters: HashMap<(String, u32), Iter> = HashMap::new();
    let mut order: HashMap<String, Vec<u32>> = HashMap::new();
    let mut started: HashMap<(String, u64), (usize, &SubcallStartedEvent)> = HashMap::new();
    let mut finished: HashMap<(String, u64), (usize, &SubcallFinishedEvent)> = HashMap::new();
    let mut llm_calls: Vec<(usize, &str, &ModelCallFinishedEvent)> = Vec::new();
    let mut children_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut span: HashMap<&str, (usize, usize)> = HashMap::new();

    for (i, e) in events.iter().enumerate() {
        let node = e.node_id.clone();
        span.entry(e.node_id.as_str())
            .and_modify(|s| s.1 = i)
            .or_insert((i, i));
        match e.event.as_ref().expect("payload") {
            Event::IterationStarted(it) => {
                let previous = iters.insert(
                    (node.clone(), it.iteration),
                    Iter {
                        started: i,
                        ..Default::default()
                    },
                );
                assert!(
                    previous.is_none(),
                    "iteration {} of {node} started twice",
                    it.iteration
                );
                order.entry(node).or_default().push(it.iteration);
            }
            Event::ModelCallFinished(m) => {
                match m.purpose() {
                    ModelCallPurpose::Iteration => {
                        let it = iters.get_mut(&(node.clone(), m.iteration)).unwrap_or_else(|| {
                        panic!("model call of {node} iteration {} before it started (event {i})", m.iteration)
                    });
                        assert!(
                            it.model.is_none(),
                            "two iteration model calls for {node}/{}",
                            m.iteration
                        );
                        it.model = Some(i);
                    }
                    ModelCallPurpose::LlmQuery => llm_calls.push((i, e.node_id.as_str(), m)),
                    other => panic!("model call with purpose {other:?} at {i}"),
                }
            }
            Event::CodeExecuted(c) => {
                let it = iters
                    .get_mut(&(node.clone(), c.iteration))
                    .unwrap_or_else(|| {
                        panic!(
                            "code of {node} iteration {} before it started (event {i})",
                            c.iteration
                        )
                    });
                assert!(
                    it.model.is_some(),
                    "code of {node} iteration {} ran before its model call finished (event {i})",
                    c.iteration
                );
                it.code.push(i);
            }
            Event::SubcallStarted(s) => {
                let previous = started.insert((node.clone(), s.subcall_id), (i, s));
                assert!(
                    previous.is_none(),
                    "sub-call {} of {node} started twice",
                    s.subcall_id
                );
                children_of
                    .entry(node)
                    .or_default()
                    .extend(s.child_node_ids.iter().cloned());
            }
            Event::SubcallFinished(f) => {
                assert!(
                    started.contains_key(&(node.clone(), f.subcall_id)),
                    "sub-call {} of {node} finished before it started (event {i})",
                    f.subcall_id
                );
                let previous = finished.insert((node.clone(), f.subcall_id), (i, f));
                assert!(
                    previous.is_none(),
                    "sub-call {} of {node} finished twice",
                    f.subcall_id
                );
            }
            Event::Result(_) => {}
        }
    }

    // Iterations: numbered 1..k per node, each with one model call. A
    // completion ended by a limit may have announced a last iteration whose
    // model call the limit then prevented (nothing else of that node may
    // follow it).
    let ended_by_final = matches!(
        events.last().and_then(|e| e.event.as_ref()),
        Some(Event::Result(r)) if r.termination_reason() == TerminationReason::Final
    );
    for (node, numbers) in &order {
        let expected: Vec<u32> = (1..=numbers.len() as u32).collect();
        assert_eq!(numbers, &expected, "iterations of {node} out of order");
        for n in numbers {
            let it = &iters[&(node.clone(), *n)];
            let Some(model) = it.model else {
                let last_of_node = events.iter().rposition(|e| {
                    e.node_id == *node && !matches!(e.event, Some(Event::Result(_)))
                });
                assert!(
                    !ended_by_final
                        && *n == numbers.len() as u32
                        && last_of_node == Some(it.started),
                    "iteration {n} of {node} has no model call"
                );
                continue;
            };
            assert!(it.started < model);
            assert!(it.code.iter().all(|c| *c > model));
        }
    }

    // Sub-calls: started < everything they caused < finished < end of the block.
    for (key, (start_index, s)) in &started {
        let (node, id) = key;
        let (finish_index, f) = finished
            .get(key)
            .unwrap_or_else(|| panic!("sub-call {id} of {node} never finished"));
        assert!(start_index < finish_index);
        assert_eq!(f.kind, s.kind, "kind of sub-call {id} of {node}");
        assert_eq!(f.outcomes.len(), s.prompts.len(), "outcomes of {node}/{id}");
        let errors = f
            .outcomes
            .iter()
            .filter(|o| matches!(o.outcome, Some(Outcome::Error(_))))
            .count();
        assert_eq!(f.error_count as usize, errors, "error_count of {node}/{id}");
        let it = iters.get(&(node.clone(), s.iteration)).unwrap_or_else(|| {
            panic!(
                "sub-call {id} of {node} names unknown iteration {}",
                s.iteration
            )
        });
        assert!(
            it.model.is_some_and(|m| m < *start_index),
            "sub-call {id} of {node} started before its iteration's model call finished"
        );
        assert!(
            it.code.iter().any(|c| c > finish_index),
            "the code block that issued sub-call {id} of {node} ended before it finished"
        );
        let real_children = s.kind() == SubcallKind::RlmQuery && !s.degraded;
        if real_children {
            assert_eq!(
                s.child_node_ids.len(),
                s.prompts.len(),
                "child_node_ids of {node}/{id}"
            );
        } else {
            assert!(
                s.child_node_ids.is_empty(),
                "child ids without children: {s:#?}"
            );
        }
        for child in &s.child_node_ids {
            let prefix = format!("{child}.");
            assert!(
                child.starts_with(&format!("{node}.")) && node_depth(child) == node_depth(node) + 1,
                "{child} is not a child id of {node}"
            );
            for (i, e) in events.iter().enumerate() {
                if e.node_id == *child || e.node_id.starts_with(&prefix) {
                    assert!(
                        start_index < &i && i < *finish_index,
                        "event {i} of {} outside sub-call {id} of {node} ({start_index}..{finish_index})",
                        e.node_id
                    );
                }
            }
        }
    }
    for (i, node, m) in &llm_calls {
        let key = ((*node).to_owned(), m.subcall_id);
        let (start_index, s) = started
            .get(&key)
            .unwrap_or_else(|| panic!("llm_query model call {i} names unknown sub-call {key:?}"));
        let (finish_index, _) = finished[&key];
        assert!(
            start_index < i && *i < finish_index,
            "model call {i} outside its sub-call"
        );
        assert!((m.item_index as usize) < s.prompts.len());
        assert!(s.kind() == SubcallKind::LlmQuery || s.degraded);
    }

    // Child ids: p.0, p.1, ... in start order; every non-root node was announced.
    let mut announced = BTreeSet::new();
    for (parent, children) in &children_of {
        let expected: Vec<String> = (0..children.len())
            .map(|k| format!("{parent}.{k}"))
            .collect();
        assert_eq!(children, &expected, "child ids of {parent}");
        announced.extend(children.iter().cloned());
    }
    for node in span.keys() {
        assert!(
            *node == "0" || announced.contains(*node),
            "events of node {node}, which no sub-call announced"
        );
    }
}

/// Sum of every model call's usage in the events: (input, output, calls, cost).
fn model_call_usage(events: &[CompletionEvent], node: Option<&str>) -> (u64, u64, u64, f64) {
    let mut sum = (0, 0, 0, 0.0);
    for e in events {
        if let Some(Event::ModelCallFinished(m)) = &e.event {
            if node.is_some_and(|n| n != e.node_id) {
                continue;
            }
            let u = usage(&m.usage);
            sum.0 += u.input_tokens;
            sum.1 += u.output_tokens;
            sum.2 += u.calls;
            sum.3 += u.cost_usd;
        }
    }
    sum
}

/// The root model's reply of its last iteration.
fn last_root_reply(events: &[CompletionEvent]) -> String {
    events
        .iter()
        .rev()
        .find_map(|e| match &e.event {
            Some(Event::ModelCallFinished(m))
                if e.node_id == "0" && m.purpose() == ModelCallPurpose::Iteration =>
            {
                Some(m.response_text.clone())
            }
            _ => None,
        })
        .expect("a root iteration model call")
}

/// Tree usage announced by the iteration_started of the root's last model
/// call (the usage the limits were checked against before that call).
fn usage_before_last_root_call(events: &[CompletionEvent]) -> Usage {
    let last_call = events
        .iter()
        .rposition(|e| {
            e.node_id == "0"
                && matches!(&e.event, Some(Event::ModelCallFinished(m))
                    if m.purpose() == ModelCallPurpose::Iteration)
        })
        .expect("a root iteration model call");
    events[..last_call]
        .iter()
        .rev()
        .find_map(|e| match &e.event {
            Some(Event::IterationStarted(it)) if e.node_id == "0" => Some(usage(&it.tree_usage)),
            _ => None,
        })
        .expect("a root iteration_started event before its model call")
}

/// Root iterations that made their model call.
fn root_model_turns(events: &[CompletionEvent]) -> u32 {
    events
        .iter()
        .filter(|e| {
            e.node_id == "0"
                && matches!(&e.event, Some(Event::ModelCallFinished(m))
                    if m.purpose() == ModelCallPurpose::Iteration)
        })
        .count() as u32
}

// ---------------------------------------------------------------------------
// Benchmark workloads on the shared fake
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn needle_in_an_uploaded_megabyte() {
    require_root();
    let fake = FakeLlm::start(None).await;
    let params = json!({"n": 1_000_000, "seed": 1234});
    fake.reset("needle", params.clone(), 0.0).await;
    let data_dir = tempfile::tempdir().expect("tempdir");
    let path = data_dir.path().join("needle.txt");
    let code = fake_llm::needle_context_file(1_000_000, 1234, &path);
    let expected = fake_llm::expected_answer("needle", &params);
    assert_eq!(code, expected);

    let stack = start_stack(&model_env(&fake.base_url())).await;
    let mut client = client(&stack).await;
    let context_id = upload_file(&mut client, &path).await;
    let result = complete(
        &mut client,
        spec(
            &fake_llm::question("needle", &params),
            vec![stored_context(&context_id)],
            None,
        ),
    )
    .await;

    assert_final(&result, &expected);
    assert_eq!(result.iterations, 2, "{result:#?}");
    assert_eq!(result.total_iterations, 2);
    assert_eq!(
        (result.subcalls, result.child_rlms, result.depth_reached),
        (0, 0, 0)
    );
    let stats = fake.assert_clean().await;
    assert_eq!(stat(&stats, "root_calls"), 2, "{stats:#}");
    assert_eq!(stat(&stats, "sub_calls"), 0, "{stats:#}");
    assert!(
        stat(&stats, "bytes_in") < 200_000,
        "the context must not be sent to the model: {} bytes in",
        stat(&stats, "bytes_in")
    );
    let total = usage(&result.total_usage);
    assert_eq!(total.calls, 2, "{result:#?}");
    assert_eq!(total.input_tokens, stat(&stats, "prompt_tokens"));
    assert_eq!(total.output_tokens, stat(&stats, "completion_tokens"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fanout_over_a_json_context_makes_one_subcall_per_chunk() {
    require_root();
    let fake = FakeLlm::start(None).await;
    let params = json!({"k": 20});
    // 50 ms per call makes the parallelism of the sub-calls observable.
    fake.reset("fanout", params.clone(), 50.0).await;
    let (chunks, counts) = fake_llm::fanout_chunks_json(20, 1500, 99);
    let expected = fake_llm::expected_answer("fanout", &params);
    assert_eq!(expected, counts.iter().sum::<u64>().to_string());

    let stack = start_stack(&model_env(&fake.base_url())).await;
    let mut client = client(&stack).await;
    let limits = CompletionLimits {
        max_parallel: 4,
        ..Default::default()
    };
    let result = complete(
        &mut client,
        spec(
            &fake_llm::question("fanout", &params),
            vec![json_context(&chunks)],
            Some(limits),
        ),
    )
    .await;

    assert_final(&result, &expected);
    assert_eq!(result.iterations, 2, "{result:#?}");
    assert_eq!(result.subcalls, 20, "{result:#?}");
    assert_eq!((result.child_rlms, result.depth_reached), (0, 0));
    let stats = fake.assert_clean().await;
    assert_eq!(stat(&stats, "sub_calls"), 20, "{stats:#}");
    assert_eq!(stat(&stats, "root_calls"), 2, "{stats:#}");
    let in_flight = stat(&stats, "max_in_flight");
    assert!(
        (2..=4).contains(&in_flight),
        "max_parallel=4: the fake saw {in_flight} calls in flight at once"
    );
    let total = usage(&result.total_usage);
    assert_eq!(total.calls, 22);
    assert_eq!(total.input_tokens, stat(&stats, "prompt_tokens"));
    assert_eq!(total.output_tokens, stat(&stats, "completion_tokens"));
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_iterations_keep_repl_state() {
    require_root();
    let fake = FakeLlm::start(None).await;
    let params = json!({"n": 20});
    fake.reset("iterations", params.clone(), 0.0).await;
    let expected = fake_llm::expected_answer("iterations", &params);
    let stack = start_stack(&model_env(&fake.base_url())).await;
    let mut client = client(&stack).await;
    let result = complete(
        &mut client,
        spec(
            &fake_llm::question("iterations", &params),
            vec![text_context(fake_llm::ITERATIONS_CONTEXT)],
            None,
        ),
    )
    .await;

    assert_final(&result, &expected);
    assert_eq!(result.iterations, 21, "{result:#?}");
    assert_eq!(result.total_iterations, 21);
    assert_eq!(result.subcalls, 0);
    // The fake checks every observation (`X = <step>`): no notes means the
    // REPL kept `x` across all 20 cells.
    let stats = fake.assert_clean().await;
    assert_eq!(stat(&stats, "root_calls"), 21, "{stats:#}");
    assert_eq!(usage(&result.total_usage).calls, 21);
}

// ---------------------------------------------------------------------------
// Recursion
// ---------------------------------------------------------------------------

fn recursion_spec(metadata: &[(&str, &str)]) -> CompletionSpec {
    CompletionSpec {
        prompt: "For each value v in 3, 5, 7 compute v*v + v with child RLMs, then answer \
                 with the sum of the results."
            .to_owned(),
        limits: Some(CompletionLimits {
            max_depth: Some(2),
            max_parallel: 16,
            ..Default::default()
        }),
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn depth_two_recursion_counts_the_whole_tree() {
    require_root();
    let scenarios = fake_llm::scenarios_dir();
    let fake = FakeLlm::start(Some(&scenarios)).await;
    let params = json!({"values": [3, 5, 7]});
    fake.reset("recursion", params.clone(), 0.0).await;
    let expected = fake_llm::scenario_expected("recursion", &params, Some(&scenarios));
    assert_eq!(expected, "98");
    let stack = start_stack(&model_env(&fake.base_url())).await;
    let mut client = client(&stack).await;
    let (events, result) = stream(&mut client, recursion_spec(&[])).await;

    assert_final(&result, &expected);
    assert_eq!(result.depth_reached, 2, "{result:#?}");
    // Root: 3 rlm_query (children 0.0-0.2); each child: 1 rlm_query (0.i.0);
    // each grandchild: 1 llm_query.
    assert_eq!(result.child_rlms, 6, "{result:#?}");
    assert_eq!(result.subcalls, 9, "{result:#?}");
    assert_eq!(result.iterations, 2);
    assert_eq!(result.total_iterations, 2 + 3 + 3 * 2, "{result:#?}");
    check_causal_order(&events);
    let nodes: BTreeSet<&str> = events.iter().map(|e| e.node_id.as_str()).collect();
    let expected_nodes: BTreeSet<&str> =
        ["0", "0.0", "0.1", "0.2", "0.0.0", "0.1.0", "0.2.0"].into();
    assert_eq!(nodes, expected_nodes);

    let stats = fake.assert_clean().await;
    assert_eq!(stat(&stats, "root_calls"), 2, "{stats:#}");
    assert_eq!(stat(&stats, "sub_calls"), 12, "{stats:#}");
    // Children's usage is in the root's totals: exactly what the model
    // server counted, and the sum of every model call of the tree.
    let total = usage(&result.total_usage);
    assert_eq!(total.calls, 14, "{result:#?}");
    assert_eq!(
        total.input_tokens,
        stat(&stats, "prompt_tokens"),
        "{result:#?}"
    );
    assert_eq!(
        total.output_tokens,
        stat(&stats, "completion_tokens"),
        "{result:#?}"
    );
    let (input, output, calls, _) = model_call_usage(&events, None);
    assert_eq!(
        (input, output, calls),
        (total.input_tokens, total.output_tokens, total.calls)
    );
    let (root_input, _, root_calls, _) = model_call_usage(&events, Some("0"));
    assert_eq!(root_calls, 2);
    assert!(root_input < total.input_tokens);
    assert_eq!(result.model_usage.len(), 1, "{:#?}", result.model_usage);
    assert_eq!(result.model_usage[0].model, MODEL);
    assert_eq!(
        usage(&result.model_usage[0].usage).input_tokens,
        total.input_tokens
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_is_causal_and_matches_the_trajectory() {
    require_root();
    let scenarios = fake_llm::scenarios_dir();
    let fake = FakeLlm::start(Some(&scenarios)).await;
    fake.reset("recursion", json!({"values": [3, 5, 7]}), 0.0)
        .await;
    let stack = start_stack(&model_env(&fake.base_url())).await;
    let mut client = client(&stack).await;
    let tag = format!("stream-{}", std::process::id());
    let spec = recursion_spec(&[("e2e-test", &tag)]);
    let (events, result) = stream(&mut client, spec.clone()).await;
    assert_final(&result, "98");
    check_causal_order(&events);
    assert_eq!(events[0].completion_id, result.completion_id);

    let trajectory = client
        .get_trajectory(GetTrajectoryRequest {
            trajectory_id: result.trajectory_id.clone(),
        })
        .await
        .expect("GetTrajectory")
        .into_inner()
        .trajectory
        .expect("trajectory");
    assert_eq!(trajectory.events.len(), events.len());
    for (i, (recorded, streamed)) in trajectory.events.iter().zip(&events).enumerate() {
        assert_eq!(
            recorded, streamed,
            "event {i} differs between the stream and the record"
        );
    }
    assert_eq!(trajectory.result.as_ref(), Some(&result));
    let summary = trajectory.summary.expect("summary");
    assert_eq!(summary.trajectory_id, result.trajectory_id);
    assert_eq!(summary.completion_id, result.completion_id);
    assert_eq!(summary.status(), TrajectoryStatus::Finished);
    assert_eq!(summary.termination_reason(), TerminationReason::Final);
    assert_eq!(summary.total_usage, result.total_usage);
    assert_eq!(summary.iterations, result.iterations);
    assert_eq!(summary.root_model, MODEL);
    assert_eq!(summary.metadata, spec.metadata);
    assert!(spec.prompt.starts_with(&summary.prompt_preview) && !summary.prompt_preview.is_empty());
    let recorded_spec = trajectory.spec.expect("spec");
    assert_eq!(recorded_spec.prompt, spec.prompt);
    assert_eq!(recorded_spec.root_model, MODEL, "model names are resolved");
    assert_eq!(
        recorded_spec.limits.and_then(|l| l.max_depth),
        Some(2),
        "the limits as given"
    );

    let listed = client
        .list_trajectories(ListTrajectoriesRequest {
            metadata: spec.metadata.clone(),
            ..Default::default()
        })
        .await
        .expect("ListTrajectories")
        .into_inner();
    let ids: Vec<&str> = listed
        .trajectories
        .iter()
        .map(|t| t.trajectory_id.as_str())
        .collect();
    assert_eq!(ids, vec![result.trajectory_id.as_str()]);
    let all = client
        .list_trajectories(ListTrajectoriesRequest::default())
        .await
        .expect("ListTrajectories")
        .into_inner();
    assert!(
        all.trajectories
            .iter()
            .any(|t| t.trajectory_id == result.trajectory_id
                && t.status() == TrajectoryStatus::Finished),
        "{all:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_depth_one_degrades_grandchildren_to_model_calls() {
    require_root();
    let scenarios = fake_llm::scenarios_dir();
    let fake = FakeLlm::start(Some(&scenarios)).await;
    fake.reset("recursion", json!({"values": [3, 5, 7]}), 0.0)
        .await;
    let stack = start_stack(&model_env(&fake.base_url())).await;
    let mut client = client(&stack).await;
    let mut spec = recursion_spec(&[]);
    spec.limits = Some(CompletionLimits {
        max_depth: Some(1),
        max_parallel: 16,
        ..Default::default()
    });
    let (events, result) = stream(&mut client, spec).await;

    // The depth-1 children still run as RLMs; their rlm_query becomes a
    // plain model call, which the fake answers (and notes) as such.
    assert_final(&result, "98");
    assert_eq!(result.depth_reached, 1, "{result:#?}");
    assert_eq!(result.child_rlms, 3, "{result:#?}");
    assert_eq!(result.subcalls, 6, "{result:#?}");
    assert_eq!(result.total_iterations, 2 + 3, "{result:#?}");
    check_causal_order(&events);
    let degraded: Vec<&CompletionEvent> = events
        .iter()
        .filter(|e| matches!(&e.event, Some(Event::SubcallStarted(s)) if s.degraded))
        .collect();
    assert_eq!(degraded.len(), 3, "{degraded:#?}");
    for e in &degraded {
        assert_eq!(e.depth, 1);
        let Some(Event::SubcallStarted(s)) = &e.event else {
            unreachable!()
        };
        assert_eq!(s.kind(), SubcallKind::RlmQuery);
        assert!(s.child_node_ids.is_empty());
    }
    let stats = fake.stats().await;
    let notes = stats["notes"].as_array().expect("notes");
    assert_eq!(notes.len(), 3, "{stats:#}");
    assert!(
        notes.iter().all(|n| n
            .as_str()
            .is_some_and(|n| n.contains("RECURSE_L2") && n.contains("plain call"))),
        "{stats:#}"
    );
    assert_eq!(usage(&result.total_usage).calls, 2 + 3 + 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_subcall_is_an_error_string_in_python() {
    require_root();
    let marker = "fault-llm: sub-call refused 9d41";
    let root = "```repl\nr = llm_query_batched(['OK_ITEM', 'FAIL_ITEM'])\n\
                FINAL(r[0] + '|' + str(r[1].startswith('Error: ')) + '|' + str('9d41' in r[1]))\n```";
    let fault = FaultLlm::with_handler(move |request| match request.first_user().as_str() {
        "OK_ITEM" => Reply::answer(request, "fine"),
        "FAIL_ITEM" => Reply::error(400, marker),
        _ if request.assistant_turns() == 0 => Reply::answer(request, root),
        _ => Reply::answer(request, "FINAL(no final in code)"),
    })
    .await;
    let stack = start_stack(&model_env(&fault.base_url())).await;
    let mut client = client(&stack).await;
    let (events, result) = stream(&mut client, spec("Query twice.", Vec::new(), None)).await;
    assert_final(&result, "fine|True|True");
    check_causal_order(&events);
    let finished: Vec<&SubcallFinishedEvent> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::SubcallFinished(f)) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].error_count, 1, "{:#?}", finished[0]);
    assert!(
        matches!(&finished[0].outcomes[1].outcome, Some(Outcome::Error(e)) if e.contains(marker)),
        "{:#?}",
        finished[0]
    );
    assert!(matches!(&finished[0].outcomes[0].outcome, Some(Outcome::Text(t)) if t == "fine"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = fault
        .requests()
        .iter()
        .filter(|r| r.first_user() == "FAIL_ITEM")
        .count();
    assert_eq!(refused, 1, "a 400 is not retried");
    assert_eq!(result.subcalls, 2);
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// A stack on the shared fake playing `iterations` with n=20 (21 calls to
/// finish: every limit below ends it first).
async fn iterations_stack(extra: &[(&str, &str)]) -> (FakeLlm, Stack, RlmServiceClient<Channel>) {
    require_root();
    let fake = FakeLlm::start(None).await;
    fake.reset("iterations", json!({"n": 20}), 0.0).await;
    let stack = start_stack(&with(model_env(&fake.base_url()), extra)).await;
    let client = client(&stack).await;
    (fake, stack, client)
}

fn iterations_spec(limits: CompletionLimits) -> CompletionSpec {
    spec(
        &fake_llm::question("iterations", &json!({"n": 20})),
        vec![text_context(fake_llm::ITERATIONS_CONTEXT)],
        Some(limits),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn token_budget_ends_with_a_partial_answer() {
    let (fake, _stack, mut client) = iterations_stack(&[]).await;
    let budget = 2_500;
    let (events, result) = stream(
        &mut client,
        iterations_spec(CompletionLimits {
            token_budget: budget,
            ..Default::default()
        }),
    )
    .await;
    assert_ended_by(&result, TerminationReason::TokenBudget);
    check_causal_order(&events);
    assert!(
        (1..21).contains(&result.iterations),
        "{} iterations",
        result.iterations
    );
    assert_eq!(
        result.answer,
        last_root_reply(&events),
        "best partial answer"
    );
    assert_eq!(
        result.iterations,
        root_model_turns(&events),
        "iterations count the root's model calls for its own turns, not an iteration a limit \
         stopped before its call: {result:#?}"
    );
    let before = usage_before_last_root_call(&events);
    assert!(
        before.input_tokens + before.output_tokens < budget,
        "a model call started with the budget already spent: {before:?}"
    );
    let stats = fake.assert_clean().await;
    assert_eq!(stat(&stats, "root_calls"), u64::from(result.iterations));
    assert_eq!(
        usage(&result.total_usage).calls,
        u64::from(result.iterations)
    );
    assert_eq!(
        usage(&result.total_usage).input_tokens,
        stat(&stats, "prompt_tokens")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cost_budget_ends_with_a_partial_answer() {
    let prices = tempfile::NamedTempFile::new().expect("price file");
    std::fs::write(
        prices.path(),
        json!({MODEL: {"input": 1.0, "output": 2.0}}).to_string(),
    )
    .expect("write prices");
    let prices_path = prices.path().display().to_string();
    let (fake, _stack, mut client) = iterations_stack(&[("RLM_PRICES_FILE", &prices_path)]).await;
    let budget = 0.0025; // USD: about 2 500 input tokens at 1 USD per million
    let (events, result) = stream(
        &mut client,
        iterations_spec(CompletionLimits {
            cost_budget_usd: budget,
            ..Default::default()
        }),
    )
    .await;
    assert_ended_by(&result, TerminationReason::CostBudget);
    check_causal_order(&events);
    assert!((1..21).contains(&result.iterations), "{result:#?}");
    assert_eq!(
        result.answer,
        last_root_reply(&events),
        "best partial answer"
    );
    assert_eq!(
        result.iterations,
        root_model_turns(&events),
        "iterations count the root's model calls for its own turns, not an iteration a limit \
         stopped before its call: {result:#?}"
    );
    let total = usage(&result.total_usage);
    assert!(total.cost_known, "every call has a price: {total:?}");
    let priced = (total.input_tokens as f64 * 1.0 + total.output_tokens as f64 * 2.0) / 1e6;
    assert!(
        (total.cost_usd - priced).abs() < 1e-9,
        "cost {} != {priced} from the price table",
        total.cost_usd
    );
    let before = usage_before_last_root_call(&events);
    assert!(
        before.cost_usd < budget,
        "a call started over budget: {before:?}"
    );
    assert_eq!(result.model_usage.len(), 1);
    assert_eq!(result.model_usage[0].model, MODEL);
    let stats = fake.assert_clean().await;
    assert_eq!(stat(&stats, "root_calls"), u64::from(result.iterations));
}

#[tokio::test(flavor = "multi_thread")]
async fn max_iterations_ends_a_model_that_never_finishes() {
    let (fake, _stack, mut client) = iterations_stack(&[]).await;
    let (events, result) = stream(
        &mut client,
        iterations_spec(CompletionLimits {
            max_iterations: 3,
            ..Default::default()
        }),
    )
    .await;
    assert_ended_by(&result, TerminationReason::MaxIterations);
    assert_eq!(result.iterations, 3, "{result:#?}");
    assert_eq!(result.total_iterations, 3);
    check_causal_order(&events);
    assert_eq!(
        result.answer,
        last_root_reply(&events),
        "best partial answer"
    );
    assert_eq!(
        result.iterations,
        root_model_turns(&events),
        "iterations count the root's model calls for its own turns, not an iteration a limit \
         stopped before its call: {result:#?}"
    );
    let stats = fake.assert_clean().await;
    assert_eq!(stat(&stats, "root_calls"), 3, "{stats:#}");
}

/// JSON the agent can describe but Python refuses (an integer over Python's
/// 4,300-digit limit): the first model call has started alongside the setup
/// cell, so the completion ends with the reason instead of INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread")]
async fn json_python_refuses_after_the_start_ends_the_completion_with_the_reason() {
    let (_fake, _stack, mut client) = iterations_stack(&[]).await;
    let huge = format!("[{}]", "7".repeat(5000));
    let result = complete(
        &mut client,
        spec(
            &fake_llm::question("iterations", &json!({"n": 20})),
            vec![json_context(&huge)],
            None,
        ),
    )
    .await;
    assert_ended_by(&result, TerminationReason::Error);
    assert!(
        result.detail.contains("context 0: not valid JSON") && result.detail.contains("4300"),
        "{result:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_subcalls_ends_the_fanout() {
    require_root();
    let fake = FakeLlm::start(None).await;
    let params = json!({"k": 20});
    fake.reset("fanout", params.clone(), 0.0).await;
    let (chunks, _) = fake_llm::fanout_chunks_json(20, 1500, 99);
    let stack = start_stack(&model_env(&fake.base_url())).await;
    let mut client = client(&stack).await;
    let result = complete(
        &mut client,
        spec(
            &fake_llm::question("fanout", &params),
            vec![json_context(&chunks)],
            Some(CompletionLimits {
                max_subcalls: Some(5),
                ..Default::default()
            }),
        ),
    )
    .await;
    assert_ended_by(&result, TerminationReason::MaxSubcalls);
    assert!(result.subcalls <= 5, "{result:#?}");
    let stats = fake.stats().await;
    assert!(stat(&stats, "sub_calls") <= 5, "{stats:#}");
}

/// The model's every turn is a cell that never ends.
fn looping_model(request: &Request) -> Reply {
    Reply::answer(
        request,
        "```repl\nimport time\nwhile True:\n    time.sleep(0.05)\n```",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_interrupts_a_running_cell() {
    require_root();
    let fault = FaultLlm::with_handler(looping_model).await;
    let stack = start_stack(&model_env(&fault.base_url())).await;
    let mut client = client(&stack).await;
    let started = Instant::now();
    let result = complete(
        &mut client,
        spec(
            "Loop forever.",
            Vec::new(),
            Some(CompletionLimits {
                timeout: seconds(1),
                ..Default::default()
            }),
        ),
    )
    .await;
    let elapsed = started.elapsed();
    assert_ended_by(&result, TerminationReason::Timeout);
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(6),
        "timeout=1s ended after {elapsed:?}"
    );
    assert_eq!(result.iterations, 1, "{result:#?}");
    assert_eq!(fault.request_count(), 1);
    assert_sessions_released(
        &mut agent(&stack).await,
        &result.completion_id,
        Duration::from_secs(2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_interrupts_a_slow_model_call() {
    require_root();
    let fault = FaultLlm::scripted(vec![
        Reply::text("FINAL(too late)").delay(Duration::from_secs(20)),
    ])
    .await;
    let env = with(model_env(&fault.base_url()), &[("RLM_LLM_TIMEOUT", "60s")]);
    let stack = start_stack(&env).await;
    let mut client = client(&stack).await;
    let started = Instant::now();
    let result = complete(
        &mut client,
        spec(
            "Answer slowly.",
            Vec::new(),
            Some(CompletionLimits {
                timeout: seconds(1),
                ..Default::default()
            }),
        ),
    )
    .await;
    let elapsed = started.elapsed();
    assert_ended_by(&result, TerminationReason::Timeout);
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(6),
        "timeout=1s ended after {elapsed:?}"
    );
    assert_ne!(result.answer, "too late");
}

// ---------------------------------------------------------------------------
// Model failures
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn transient_model_errors_are_retried_honouring_retry_after() {
    require_root();
    let fault = FaultLlm::scripted(vec![
        Reply::error(429, "fault-llm: slow down").header("Retry-After", "1"),
        Reply::error(500, "fault-llm: internal hiccup"),
        Reply::text_with_usage("FINAL(42)", 17, 3),
    ])
    .await;
    let env = with(
        model_env(&fault.base_url()),
        &[("RLM_LLM_MAX_ATTEMPTS", "4"), ("RLM_LLM_TIMEOUT", "10s")],
    );
    let stack = start_stack(&env).await;
    let mut client = client(&stack).await;
    let result = complete(
        &mut client,
        spec("What is six times seven?", Vec::new(), None),
    )
    .await;

    assert_final(&result, "42");
    let seen = fault.requests();
    assert_eq!(seen.len(), 3, "429, 500, then success: {seen:#?}");
    let after_429 = seen[1].at.duration_since(seen[0].at);
    assert!(
        after_429 >= Duration::from_secs(1),
        "Retry-After: 1 not honoured: retried after {after_429:?}"
    );
    let after_500 = seen[2].at.duration_since(seen[1].at);
    assert!(
        after_500 < Duration::from_millis(900),
        "a 500 without Retry-After waits the short back-off, not {after_500:?}"
    );
    assert!(
        seen.iter()
            .all(|r| r.body["messages"] == seen[0].body["messages"]),
        "a retry resends the same request"
    );
    assert_eq!(seen[0].model(), "fake-rlm");
    assert_eq!(seen[0].header("authorization"), Some("Bearer e2e-test-key"));
    let total = usage(&result.total_usage);
    assert_eq!(
        (total.input_tokens, total.output_tokens),
        (17, 3),
        "{total:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_error_is_not_retried() {
    require_root();
    let marker = "fault-llm: context_length_exceeded 7f3a";
    let fault = FaultLlm::scripted(vec![Reply::error(400, marker)]).await;
    let env = with(
        model_env(&fault.base_url()),
        &[("RLM_LLM_MAX_ATTEMPTS", "4")],
    );
    let stack = start_stack(&env).await;
    let mut client = client(&stack).await;
    let result = complete(&mut client, spec("Anything.", Vec::new(), None)).await;
    assert_ended_by(&result, TerminationReason::ModelError);
    assert!(
        result.detail.contains(marker),
        "the provider's message is in the detail: {result:#?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fault.request_count(), 1, "a 400 is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_server_errors_exhaust_the_attempts() {
    require_root();
    let marker = "fault-llm: overloaded 51c2";
    let fault = FaultLlm::scripted(vec![Reply::error(503, marker)]).await;
    let env = with(
        model_env(&fault.base_url()),
        &[
            ("RLM_LLM_MAX_ATTEMPTS", "3"),
            ("RLM_LLM_RETRY_BASE", "10ms"),
        ],
    );
    let stack = start_stack(&env).await;
    let mut client = client(&stack).await;
    let result = complete(&mut client, spec("Anything.", Vec::new(), None)).await;
    assert_ended_by(&result, TerminationReason::ModelError);
    assert!(result.detail.contains(marker), "{result:#?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fault.request_count(), 3, "RLM_LLM_MAX_ATTEMPTS=3");
}

// ---------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn cancel_mid_fanout_tears_down_the_whole_tree() {
    require_root();
    let pid = std::process::id();
    // `sleep <marker>` runs in every session of the tree, so its processes
    // can be found from outside the sessions' PID namespaces.
    let marker = format!("{}.{pid}", 800 + pid % 100);
    let root_code = format!(
        "```repl\nimport subprocess\nkeep = subprocess.Popen(['sleep', '{marker}'])\n\
         answers = rlm_query_batched(['CANCEL_CHILD 0', 'CANCEL_CHILD 1'])\nprint(answers)\n```"
    );
    let child_code = format!(
        "```repl\nimport subprocess\nkeep = subprocess.Popen(['sleep', '{marker}'])\n\
         answers = llm_query_batched(['SLOW_ITEM %d' % i for i in range(40)])\nprint(len(answers))\n```"
    );
    let fault = FaultLlm::with_handler(move |request| {
        let first = request.first_user();
        let turns = request.assistant_turns();
        if first.contains("SLOW_ITEM") {
            Reply::answer(request, "slow answer").delay(Duration::from_millis(300))
        } else if first.contains("CANCEL_CHILD") {
            let reply = if turns == 0 {
                child_code.as_str()
            } else {
                "FINAL(child done)"
            };
            Reply::answer(request, reply)
        } else {
            let reply = if turns == 0 {
                root_code.as_str()
            } else {
                "FINAL(root done)"
            };
            Reply::answer(request, reply)
        }
    })
    .await;
    let cgroup = format!("rlm-test-cancel-{pid}");
    let env = with(
        model_env(&fault.base_url()),
        &[
            ("RLM_AGENT_POOL_SIZE", "0"),
            ("RLM_AGENT_CGROUP", cgroup.as_str()),
        ],
    );
    let stack = start_stack(&env).await;
    let mut client = client(&stack).await;
    let mut sandbox = agent(&stack).await;
    let limits = CompletionLimits {
        max_depth: Some(1),
        max_parallel: 4,
        timeout: seconds(120),
        ..Default::default()
    };
    let mut responses = client
        .stream_complete(StreamCompleteRequest {
            spec: Some(spec(
                "Start two children and wait for them.",
                Vec::new(),
                Some(limits),
            )),
        })
        .await
        .expect("StreamComplete")
        .into_inner();

    // Wait until both children are waiting on their slow llm_query batch.
    let mut events: Vec<CompletionEvent> = Vec::new();
    let mut waiting = BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while waiting.len() < 2 {
            let event = responses
                .message()
                .await
                .expect("stream")
                .expect("the stream ended before the children started their sub-calls")
                .event
                .expect("event");
            if let Some(Event::SubcallStarted(s)) = &event.event
                && s.kind() == SubcallKind::LlmQuery
                && event.node_id.starts_with("0.")
            {
                waiting.insert(event.node_id.clone());
            }
            assert!(
                !matches!(event.event, Some(Event::Result(_))),
                "ended early: {event:#?}"
            );
            events.push(event);
        }
    })
    .await
    .expect("the children never started their sub-calls");
    let completion_id = events[0].completion_id.clone();

    // The tree is alive: three sessions labelled with the completion, three
    // marker processes, their cgroups.
    let live = sessions_of(&mut sandbox, &completion_id).await;
    let labels: BTreeSet<String> = live
        .iter()
        .filter_map(|s| s.labels.as_ref().map(|l| l.node_id.clone()))
        .collect();
    assert_eq!(
        labels,
        BTreeSet::from(["0".to_owned(), "0.0".to_owned(), "0.1".to_owned()]),
        "{live:#?}"
    );
    // The markers were started before the sub-calls; a loaded machine may
    // still be scheduling the last exec.
    let seen = Instant::now();
    while processes_matching(&marker) != 3 && seen.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        processes_matching(&marker),
        3,
        "one marker process per session"
    );
    let cgroups_before = session_cgroups(&cgroup);
    assert!(
        cgroups_before.is_some_and(|n| n >= 3),
        "no session cgroups found under {cgroup}: {cgroups_before:?}"
    );

    let cancelled_at = Instant::now();
    let reason = "e2e: cancelled mid fan-out";
    let cancel = client
        .cancel_completion(CancelCompletionRequest {
            completion_id: completion_id.clone(),
            reason: reason.to_owned(),
        })
        .await
        .expect("CancelCompletion")
        .into_inner();
    assert!(cancel.was_running);
    let result = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = responses
                .message()
                .await
                .expect("stream")
                .expect("the stream ended without a result")
                .event
                .expect("event");
            let result = match &event.event {
                Some(Event::Result(result)) => Some(result.clone()),
                _ => None,
            };
            events.push(event);
            if let Some(result) = result {
                return result;
            }
        }
    })
    .await
    .expect("no result within 5 s of CancelCompletion");
    let result_at = Instant::now();
    assert!(
        result_at - cancelled_at < Duration::from_secs(2),
        "the cancelled result took {:?}",
        result_at - cancelled_at
    );
    assert_ended_by(&result, TerminationReason::Cancelled);
    assert!(result.detail.contains(reason), "{result:#?}");
    assert_eq!(result.completion_id, completion_id);
    assert!(
        responses.message().await.expect("stream ends OK").is_none(),
        "nothing after the result"
    );
    check_sequence(&events);

    // Within a second, nothing of the tree is left.
    let deadline = result_at + Duration::from_secs(1);
    loop {
        let left = sessions_of(&mut sandbox, &completion_id).await;
        let processes = processes_matching(&marker);
        let cgroups = session_cgroups(&cgroup).unwrap_or(0);
        if left.is_empty() && processes == 0 && cgroups == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "1 s after the cancelled result: {} sessions, {processes} processes, {cgroups} cgroups left: {left:#?}",
            left.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // No model call starts after the result.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let calls = fault.request_count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fault.request_count(),
        calls,
        "model calls after cancellation"
    );

    let again = client
        .cancel_completion(CancelCompletionRequest {
            completion_id: completion_id.clone(),
            reason: String::new(),
        })
        .await
        .expect("CancelCompletion of an ended completion")
        .into_inner();
    assert!(!again.was_running);
    let unknown = client
        .cancel_completion(CancelCompletionRequest {
            completion_id: "no-such-completion".to_owned(),
            reason: String::new(),
        })
        .await
        .expect_err("unknown id");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let recorded = client
        .get_trajectory(GetTrajectoryRequest {
            trajectory_id: result.trajectory_id.clone(),
        })
        .await
        .expect("GetTrajectory")
        .into_inner()
        .trajectory
        .expect("trajectory");
    let summary = recorded.summary.expect("summary");
    assert_eq!(summary.status(), TrajectoryStatus::Finished);
    assert_eq!(summary.termination_reason(), TerminationReason::Cancelled);
}

// ---------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_concurrent_completions() {
    require_root();
    let fake = FakeLlm::start(None).await;
    let params = json!({"n": 3});
    // 20 ms per call makes overlapping calls observable: the fake accepts
    // connections on one thread, and a call answered at once is usually done
    // before the next is accepted, so `max_in_flight` stayed 1 at times
    // even though the completions ran together.
    fake.reset("iterations", params.clone(), 20.0).await;
    let expected = fake_llm::expected_answer("iterations", &params);
    let env = with(
        model_env(&fake.base_url()),
        &[
            ("RLM_AGENT_MAX_SESSIONS", "128"),
            ("RLM_AGENT_POOL_SIZE", "4"),
        ],
    );
    let stack = start_stack(&env).await;
    let client = client(&stack).await;
    let question = fake_llm::question("iterations", &params);
    let runs = (0..64).map(|i| {
        let mut client = client.clone();
        let mut spec = spec(
            &question,
            vec![text_context(fake_llm::ITERATIONS_CONTEXT)],
            None,
        );
        spec.metadata.insert("run".to_owned(), i.to_string());
        tokio::spawn(async move { complete(&mut client, spec).await })
    });
    let results = tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(runs))
        .await
        .expect("64 completions did not end within 300 s");
    let mut completions = BTreeSet::new();
    let mut trajectories = BTreeSet::new();
    for result in results {
        let result = result.expect("completion task");
        assert_final(&result, &expected);
        assert_eq!(result.iterations, 4, "{result:#?}");
        completions.insert(result.completion_id.clone());
        trajectories.insert(result.trajectory_id.clone());
    }
    assert_eq!(
        (completions.len(), trajectories.len()),
        (64, 64),
        "ids are unique"
    );
    let stats = fake.assert_clean().await;
    assert_eq!(stat(&stats, "root_calls"), 64 * 4, "{stats:#}");
    assert!(
        stat(&stats, "max_in_flight") >= 2,
        "the completions ran one at a time: {stats:#}"
    );

    // Every session of those completions is released.
    let mut sandbox = agent(&stack).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let all = sessions_of(&mut sandbox, "").await;
        let left: Vec<_> = all
            .iter()
            .filter(|s| {
                s.labels
                    .as_ref()
                    .is_some_and(|l| completions.contains(&l.completion_id))
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "sessions left: {left:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// Invalid requests
// ---------------------------------------------------------------------------

/// The status of a StreamComplete that must fail, whether the server fails
/// the call itself or the first message of the stream.
async fn stream_error(
    client: &mut RlmServiceClient<Channel>,
    spec: CompletionSpec,
) -> tonic::Status {
    match client
        .stream_complete(StreamCompleteRequest { spec: Some(spec) })
        .await
    {
        Err(status) => status,
        Ok(response) => {
            let mut responses = response.into_inner();
            match tokio::time::timeout(Duration::from_secs(10), responses.message()).await {
                Ok(Err(status)) => status,
                other => panic!("StreamComplete accepted an invalid spec: {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests_name_the_field() {
    require_root();
    let fake = FakeLlm::start(None).await;
    fake.reset("echo", json!({"text": "FINAL(unexpected)"}), 0.0)
        .await;
    let stack = start_stack(&model_env(&fake.base_url())).await;
    let mut client = client(&stack).await;
    let valid = || spec("A valid prompt.", Vec::new(), None);
    let cases: Vec<(&str, CompletionSpec)> = vec![
        (
            "spec.prompt",
            CompletionSpec {
                prompt: String::new(),
                ..valid()
            },
        ),
        (
            "spec.limits.max_iterations",
            CompletionSpec {
                limits: Some(CompletionLimits {
                    max_iterations: 5000,
                    ..Default::default()
                }),
                ..valid()
            },
        ),
        (
            "spec.root_model",
            CompletionSpec {
                root_model: "mistral/x".to_owned(),
                ..valid()
            },
        ),
        (
            "spec.contexts[0]",
            CompletionSpec {
                contexts: vec![json_context("{not json")],
                ..valid()
            },
        ),
    ];
    for (field, spec) in cases {
        let status = client
            .complete(CompleteRequest {
                spec: Some(spec.clone()),
            })
            .await
            .expect_err(field);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{field}: {status:?}"
        );
        assert!(
            status.message().contains(field),
            "{field} not named in {status:?}"
        );
        let status = stream_error(&mut client, spec).await;
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{field}: {status:?}"
        );
        assert!(
            status.message().contains(field),
            "{field} not named in {status:?}"
        );
    }
    let missing = client
        .complete(CompleteRequest { spec: None })
        .await
        .expect_err("no spec");
    assert_eq!(missing.code(), tonic::Code::InvalidArgument, "{missing:?}");
    assert!(missing.message().contains("spec"), "{missing:?}");

    let unknown = client
        .complete(CompleteRequest {
            spec: Some(CompletionSpec {
                contexts: vec![stored_context(&format!("sha256:{}", "0".repeat(64)))],
                ..valid()
            }),
        })
        .await
        .expect_err("unknown context id");
    assert_eq!(
        unknown.code(),
        tonic::Code::NotFound,
        "an unknown context id is NOT_FOUND (context.proto), so clients know to upload again: \
         {unknown:?}"
    );

    let stats = fake.stats().await;
    assert_eq!(
        stat(&stats, "requests"),
        0,
        "rejected requests reach no model: {stats:#}"
    );
    let trajectory = client
        .get_trajectory(GetTrajectoryRequest {
            trajectory_id: "no-such-trajectory".to_owned(),
        })
        .await
        .expect_err("unknown trajectory");
    assert_eq!(trajectory.code(), tonic::Code::NotFound, "{trajectory:?}");
}
