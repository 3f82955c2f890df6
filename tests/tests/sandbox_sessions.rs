//! Functional behaviour of sandbox sessions: persistence, streaming, sub-calls
//! through a client playing the orchestrator, contexts, the warm pool, errors,
//! shutdown and recovery after a crash. Needs root.

use std::collections::HashMap;
use std::time::Duration;

use rlm_e2e::sandbox::{
    Answerer, Sandbox, dedicated_agent, processes_matching, require_root, shared_agent,
};
use rlm_e2e::{Service, wait_serving};
use rlm_proto::rlm::sandbox::v1::*;

#[tokio::test(flavor = "multi_thread")]
async fn globals_persist_and_output_is_never_lost() {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    sandbox
        .run(&id, "x = 0\ndef bump(n): return x + n")
        .await
        .ok();
    for i in 1..=50 {
        let run = sandbox.run(&id, "x = bump(1)\nprint(x)").await.ok();
        assert_eq!(run.out(), format!("{i}\n"));
    }
    sandbox.destroy(&id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn output_streams_in_order_per_stream_and_expressions_display() {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let run = sandbox
        .run(&id, "import sys\nfor i in range(20):\n    print('o', i, flush=True)\n    print('e', i, file=sys.stderr, flush=True)\n6 * 7")
        .await
        .ok();
    let expected_out: String = (0..20).map(|i| format!("o {i}\n")).collect::<String>() + "42\n";
    let expected_err: String = (0..20).map(|i| format!("e {i}\n")).collect();
    assert_eq!(run.out(), expected_out);
    assert_eq!(run.err(), expected_err);
    assert!(run.chunks.len() >= 2, "streamed in chunks, not one blob");
    sandbox.destroy(&id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exceptions_final_and_show_vars_come_back() {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let run = sandbox
        .run(&id, "answer = 41\nFINAL(answer + 1)\n1 / 0")
        .await;
    let error = run.result.error.clone().expect("error");
    assert_eq!(error.exception_type, "ZeroDivisionError");
    assert!(error.traceback.contains("<cell"), "{}", error.traceback);
    assert!(run.result.final_called && run.result.final_value.as_deref() == Some("42"));
    let run = sandbox.run(&id, "FINAL_VAR('answer')").await.ok();
    assert_eq!(run.result.final_value.as_deref(), Some("41"));
    let run = sandbox.run(&id, "SHOW_VARS()").await.ok();
    assert!(run.out().contains("'answer': 'int'"), "{}", run.out());
    let run = sandbox.run(&id, "print(").await;
    assert_eq!(
        run.result.error.map(|e| e.exception_type).as_deref(),
        Some("SyntaxError")
    );
    sandbox.destroy(&id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subcalls_round_trip_through_the_client() {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let answer: Answerer = Box::new(|request: &SubcallRequest| {
        request
            .prompts
            .iter()
            .map(|prompt| {
                if prompt == "fail" {
                    subcall_result::Outcome::Error("model refused".into())
                } else {
                    subcall_result::Outcome::Text(format!(
                        "{}:{}",
                        request.kind().as_str_name(),
                        prompt.to_uppercase()
                    ))
                }
            })
            .collect()
    });
    let code = "a = llm_query('hi', model='m1')\nb = llm_query_batched(['x', 'fail', 'z'])\nc = rlm_query('child', context='ctx')\nprint(a)\nprint(b)\nprint(c)";
    let run = sandbox
        .run_with(&id, code, Duration::from_secs(30), Some(&answer))
        .await
        .ok();
    assert_eq!(
        run.out(),
        "SUBCALL_KIND_LLM_QUERY:HI\n['SUBCALL_KIND_LLM_QUERY:X', 'Error: model refused', 'SUBCALL_KIND_LLM_QUERY:Z']\nSUBCALL_KIND_RLM_QUERY:CHILD\n"
    );
    assert_eq!(run.subcalls.len(), 3);
    assert_eq!(run.result.subcalls, 3);
    let (first, batch, child) = (&run.subcalls[0], &run.subcalls[1], &run.subcalls[2]);
    assert!(!first.batched && first.model == "m1" && first.prompts == ["hi"]);
    assert!(batch.batched && batch.prompts == ["x", "fail", "z"]);
    assert_eq!(child.kind(), SubcallKind::RlmQuery);
    assert!(matches!(
        child.contexts.first().and_then(|c| c.source.as_ref()),
        Some(subcall_context::Source::Text(text)) if text == "ctx"
    ));
    assert!(first.id < batch.id && batch.id < child.id);
    sandbox.destroy(&id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn contexts_are_stored_once_and_shared_read_only() {
    let agent = shared_agent();
    let mut sandbox = Sandbox::shared().await;
    let text = format!("{}needle{}", "a".repeat(3 << 20), "b".repeat(1000));
    let upload = |data: Vec<u8>| {
        let mut client = sandbox.client.clone();
        async move {
            let chunks: Vec<PutContextRequest> = data
                .chunks(1 << 20)
                .map(|c| PutContextRequest {
                    chunk: c.to_vec(),
                    ..Default::default()
                })
                .collect();
            client
                .put_context(futures::stream::iter(chunks))
                .await
                .expect("put")
                .into_inner()
        }
    };
    let first = upload(text.clone().into_bytes()).await;
    let second = upload(b"second \xff context".to_vec()).await;
    let again = upload(text.clone().into_bytes()).await;
    assert!(again.already_existed && again.context_id == first.context_id);

    let ids = vec![first.context_id.clone(), second.context_id.clone()];
    let a = sandbox.create(None, ids.clone()).await.session_id;
    let b = sandbox.create(None, ids).await.session_id;
    for id in [&a, &b] {
        let run = sandbox
            .run(
                id,
                "print(len(context), context.index('needle'), context is context_0, context_1)",
            )
            .await
            .ok();
        assert_eq!(
            run.out(),
            format!("{} {} True second \u{fffd} context\n", text.len(), 3 << 20)
        );
    }
    let blobs = std::fs::read_dir(agent.data_dir.join("contexts/sha256"))
        .expect("store")
        .count();
    assert!(blobs >= 2);
    // Read-only inside, and nothing of it lands in the session's scratch space.
    let run = sandbox
        .run(
            &a,
            "import os\nprint(sum(os.path.getsize('/work/' + f) for f in os.listdir('/work')))",
        )
        .await
        .ok();
    assert_eq!(run.out(), "0\n");
    let unknown = sandbox
        .client
        .create_session(CreateSessionRequest {
            context_ids: vec![format!("sha256:{}", "0".repeat(64))],
            ..Default::default()
        })
        .await
        .expect_err("unknown context");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(unknown.message().contains("context_ids[0]"), "{unknown:?}");
    sandbox.destroy(&a).await;
    sandbox.destroy(&b).await;
}

/// CreateSession describes each context as the REPL decodes it (length and
/// first 200 characters, invalid UTF-8 replaced) and, when asked, the top
/// level of JSON arrays and objects as `json.loads` builds them.
#[tokio::test(flavor = "multi_thread")]
async fn context_summaries_match_what_the_repl_sees() {
    let mut sandbox = Sandbox::shared().await;
    let contents: Vec<Vec<u8>> = vec![
        format!("h\u{e9}llo \u{1f600} {}", "\u{4e2d}".repeat(300)).into_bytes(),
        b"bad \xff\xfe bytes, cut at the end \xe2\x82".to_vec(),
        br#"[1, "two", {"three": 3}]"#.to_vec(),
        br#"{"a": 1, "b": [2], "a": 3}"#.to_vec(),
        b"[NaN, 1]".to_vec(),
    ];
    let mut ids = Vec::new();
    for data in contents {
        let stored = sandbox
            .client
            .put_context(futures::stream::iter([PutContextRequest {
                chunk: data,
                ..Default::default()
            }]))
            .await
            .expect("put")
            .into_inner();
        ids.push(stored.context_id);
    }
    let created = sandbox
        .client
        .create_session(CreateSessionRequest {
            context_ids: ids,
            json_contexts: vec![2, 3, 4],
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.contexts.len(), 5, "{created:?}");
    let run = sandbox
        .run(
            &created.session_id,
            "import json\nfor i in range(5):\n    t = globals()['context_%d' % i]\n    print(len(t), ascii(t[:200]))\nfor i in (2, 3, 4):\n    v = json.loads(globals()['context_%d' % i])\n    print(type(v).__name__, len(v))",
        )
        .await
        .ok();
    let described: String = created
        .contexts
        .iter()
        .map(|c| {
            // As Python's ascii() writes it (no quote or backslash here).
            let preview: String = c
                .preview
                .chars()
                .map(|ch| {
                    if ch.is_ascii() && !ch.is_ascii_control() {
                        ch.to_string()
                    } else if (ch as u32) < 0x100 {
                        format!("\\x{:02x}", ch as u32)
                    } else if (ch as u32) < 0x10000 {
                        format!("\\u{:04x}", ch as u32)
                    } else {
                        format!("\\U{:08x}", ch as u32)
                    }
                })
                .collect();
            format!("{} '{preview}'\n", c.chars)
        })
        .collect();
    let shapes: String = created.contexts[2..]
        .iter()
        .map(|c| match &c.json {
            Some(shape) => format!("{} {}\n", shape.r#type, shape.items),
            None => "undescribed\n".to_owned(),
        })
        .collect();
    let out = run.out();
    let (texts, parsed) = out.split_at(out.match_indices('\n').nth(4).expect("5 lines").0 + 1);
    assert_eq!(texts, described);
    assert_eq!(parsed, "list 3\ndict 2\nlist 2\n");
    // NaN is valid for json.loads but not for the agent: left to the REPL.
    assert_eq!(shapes, "list 3\ndict 2\nundescribed\n");
    assert!(created.contexts[0].json.is_none() && created.contexts[1].json.is_none());
    sandbox.destroy(&created.session_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_pool_serves_default_sessions_and_refills() {
    let mut sandbox = Sandbox::shared().await;
    // Let the pool fill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = sandbox
        .client
        .get_info(GetInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.isolation_mode(), IsolationMode::Full);
    assert!(
        info.isolation_features.len() >= 15,
        "{:?}",
        info.isolation_features
    );
    let pool = &info.pools[0];
    assert_eq!(pool.profile, "mem512Mi-cpu1000m-pids64-tmp64Mi");
    let hits_before = pool.hits;
    let created = sandbox.create(None, Vec::new()).await;
    assert!(
        created.from_warm_pool,
        "a default session comes from the pool"
    );
    // Other mounts (here the tmpfs size) cannot be served by the pool.
    let custom = sandbox
        .create(
            Some(SessionLimits {
                tmpfs_bytes: 32 << 20,
                ..Default::default()
            }),
            Vec::new(),
        )
        .await;
    assert!(!custom.from_warm_pool, "other mounts start a process");
    assert_eq!(custom.profile, "mem512Mi-cpu1000m-pids64-tmp32Mi");
    let after = sandbox
        .client
        .get_info(GetInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert!(after.pools[0].hits > hits_before);
    // Sessions waiting in the pool started at the lowest CPU priority (a
    // refill must not slow the requests being served); a session handed
    // out, or started for a request, runs at the normal one.
    for id in [&created.session_id, &custom.session_id] {
        let run = sandbox
            .run(id, "import os\nprint(os.getpriority(os.PRIO_PROCESS, 0))")
            .await
            .ok();
        assert_eq!(run.out(), "0\n");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting: Vec<i64> = agent_children(shared_agent().pid)
        .into_iter()
        .filter(|(_, nice)| *nice != 0)
        .map(|(_, nice)| nice)
        .collect();
    assert!(
        !waiting.is_empty() && waiting.iter().all(|&n| n == 19),
        "{waiting:?}"
    );
    sandbox.destroy(&created.session_id).await;
    sandbox.destroy(&custom.session_id).await;
}

/// (pid, nice) of the direct children of `parent`, from /proc.
fn agent_children(parent: i32) -> Vec<(i32, i64)> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name (which may hold spaces): state,
            // ppid, ... nice (proc(5): fields 3, 4 and 19).
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ppid: i32 = fields.get(1)?.parse().ok()?;
            let nice: i64 = fields.get(16)?.parse().ok()?;
            (ppid == parent).then_some((pid, nice))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_name_the_field() {
    let mut sandbox = Sandbox::shared().await;
    let invalid = sandbox
        .client
        .create_session(CreateSessionRequest {
            limits: Some(SessionLimits {
                max_pids: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("pids");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(invalid.message().contains("limits.max_pids"), "{invalid:?}");
    let network = sandbox
        .client
        .create_session(CreateSessionRequest {
            limits: Some(SessionLimits {
                network: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("network");
    assert_eq!(network.code(), tonic::Code::PermissionDenied);

    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender
        .send(ExecuteRequest {
            payload: Some(execute_request::Payload::Start(ExecuteStart {
                session_id: "s-nope".into(),
                code: "1".into(),
                timeout: None,
            })),
        })
        .await
        .expect("send");
    let missing = sandbox
        .client
        .execute(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect_err("unknown session");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(!sandbox.destroy("s-nope").await, "destroy is idempotent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_session_reports_why_and_the_next_call_is_refused() {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let run = sandbox.run(&id, "import os\nos._exit(3)").await;
    assert!(run.result.session_ended, "{:?}", run.result);
    assert_eq!(run.result.end_reason(), SessionEndReason::Exited);
    assert!(
        run.result.end_detail.contains("status 3"),
        "{:?}",
        run.result
    );
    let crash = sandbox.session().await;
    let run = sandbox
        .run(&crash, "import ctypes\nctypes.string_at(0)")
        .await;
    assert_eq!(
        run.result.end_reason(),
        SessionEndReason::Crashed,
        "{:?}",
        run.result
    );
    sandbox.destroy(&crash).await;
    let again = sandbox
        .client
        .list_sessions(ListSessionsRequest::default())
        .await
        .expect("list")
        .into_inner();
    let state = again
        .sessions
        .iter()
        .find(|s| s.session_id == id)
        .map(|s| s.state());
    assert!(
        matches!(state, Some(SessionState::Ended) | None),
        "{state:?}"
    );
    sandbox.destroy(&id).await;
}

/// A dedicated agent (cgroup parent `rlm-test-{tag}-<pid>`) with `settings`
/// over [`agent_env`]; the directory lives as long as the returned guard.
async fn agent_with(
    tag: &str,
    settings: &[(&str, &str)],
) -> (tempfile::TempDir, rlm_e2e::Service, Sandbox) {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = agent_env(
        dir.path(),
        &format!("rlm-test-{tag}-{}", std::process::id()),
    );
    for (name, value) in settings {
        env.insert((*name).to_owned(), (*value).to_owned());
    }
    let (agent, sandbox) = dedicated_agent(dir.path(), &env).await;
    (dir, agent, sandbox)
}

fn agent_env(dir: &std::path::Path, cgroup: &str) -> HashMap<String, String> {
    HashMap::from([
        (
            "RLM_AGENT_LISTEN".to_owned(),
            format!("unix://{}", dir.join("sock").display()),
        ),
        (
            "RLM_AGENT_DATA_DIR".to_owned(),
            dir.join("data").display().to_string(),
        ),
        ("RLM_AGENT_CGROUP".to_owned(), cgroup.to_owned()),
        ("RLM_AGENT_POOL_SIZE".to_owned(), "2".to_owned()),
    ])
}

fn cgroup_sessions(cgroup: &str) -> usize {
    std::fs::read_dir(format!("/sys/fs/cgroup/pids/{cgroup}"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_reaps_what_a_crashed_one_left() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let cgroup = format!("rlm-test-crash-{}", std::process::id());
    let env = agent_env(dir.path(), &cgroup);
    let address = env["RLM_AGENT_LISTEN"].clone();
    let mut first = Service::start("rlm-sandbox-agent", dir.path(), &env, &[]);
    wait_serving(&address, &first).await;
    let mut sandbox = Sandbox::connect(&address).await;
    let id = sandbox.session().await;
    sandbox
        .run(
            &id,
            "import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)",
        )
        .await
        .ok();
    assert!(cgroup_sessions(&cgroup) >= 1);
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5)).expect("killed");

    let mut second = Service::start("rlm-sandbox-agent", dir.path(), &env, &[]);
    wait_serving(&address, &second).await;
    assert!(
        second
            .log_text()
            .contains("removed session cgroups left by a previous agent"),
        "{}",
        second.log_text()
    );
    let mut sandbox = Sandbox::connect(&address).await;
    let fresh = sandbox.session().await;
    assert_eq!(sandbox.run(&fresh, "print('ok')").await.ok().out(), "ok\n");
    assert_eq!(second.stop().code(), Some(0));
    assert_eq!(
        cgroup_sessions(&cgroup),
        0,
        "nothing left after a clean stop"
    );
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/pids/{cgroup}")).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_to_start_when_it_cannot_isolate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = agent_env(
        dir.path(),
        &format!("rlm-test-refuse-{}", std::process::id()),
    );
    env.insert("RLM_AGENT_PYTHON".into(), "/nonexistent/python3".into());
    let mut agent = Service::start("rlm-sandbox-agent", dir.path(), &env, &[]);
    let status = agent.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    let log = agent.log_text();
    assert!(
        log.contains("cannot isolate sessions") && log.contains("/nonexistent/python3"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn isolation_none_is_loud_about_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = agent_env(dir.path(), "unused");
    env.insert("RLM_AGENT_ISOLATION".into(), "none".into());
    let (agent, mut sandbox) = dedicated_agent(dir.path(), &env).await;
    let info = sandbox
        .client
        .get_info(GetInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.isolation_mode(), IsolationMode::None);
    assert!(
        info.warnings.iter().any(|w| w.contains("isolation=none")),
        "{:?}",
        info.warnings
    );
    assert!(agent.log_text().contains("isolation=none"));
    let id = sandbox.session().await;
    assert_eq!(sandbox.run(&id, "print(1 + 1)").await.ok().out(), "2\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn cgroup_namespace_hides_the_host_hierarchy() {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let run = sandbox
        .run(
            &id,
            "print(sorted(set(l.split(':', 2)[2].strip() for l in open('/proc/self/cgroup'))))",
        )
        .await
        .ok();
    assert_eq!(run.out(), "['/']\n");
    sandbox.destroy(&id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_expire_and_the_session_limit_holds() {
    let (_dir, _agent, mut sandbox) = agent_with("limit", &[("RLM_AGENT_MAX_SESSIONS", "2")]).await;
    let short = SessionLimits {
        idle_ttl: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    };
    let expiring = sandbox.create(Some(short), Vec::new()).await.session_id;
    let kept = sandbox.session().await;
    let refused = sandbox
        .client
        .create_session(CreateSessionRequest::default())
        .await
        .expect_err("over the limit");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let listed = sandbox
        .client
        .list_sessions(ListSessionsRequest::default())
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<&str> = listed
        .sessions
        .iter()
        .map(|s| s.session_id.as_str())
        .collect();
    assert!(
        !ids.contains(&expiring.as_str()),
        "idle past its TTL: {ids:?}"
    );
    assert!(
        ids.contains(&kept.as_str()),
        "default TTL is 10 minutes: {ids:?}"
    );
    // The expired one freed a slot.
    sandbox.session().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_goes_away_mid_cell_takes_its_session_with_it() {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let marker = format!("{}.{}", 700 + std::process::id() % 100, std::process::id());
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender
        .send(ExecuteRequest {
            payload: Some(execute_request::Payload::Start(ExecuteStart {
                session_id: id.clone(),
                code: format!("import subprocess, time\nsubprocess.Popen(['sleep', '{marker}'])\nprint('running', flush=True)\nwhile True: time.sleep(0.01)"),
                timeout: None,
            })),
        })
        .await
        .expect("start");
    let mut responses = sandbox
        .client
        .execute(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("execute")
        .into_inner();
    let first = responses.message().await.expect("stream").expect("output");
    assert!(matches!(
        first.payload,
        Some(execute_response::Payload::Output(_))
    ));
    drop((responses, sender));

    let survivors = || processes_matching(&marker);
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let listed = sandbox
            .client
            .list_sessions(ListSessionsRequest::default())
            .await
            .expect("list")
            .into_inner();
        let gone = !listed.sessions.iter().any(|s| s.session_id == id);
        if gone && survivors() == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "session or its processes outlived the caller by 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_stream_carries_many_cells_in_order() {
    use rlm_e2e::sandbox::CellStream;
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let other = sandbox.session().await;
    let (mut stream, first) = CellStream::open(&mut sandbox, &id, "n = 0\nprint('first')")
        .await
        .expect("open");
    assert_eq!(first.ok().out(), "first\n");
    for i in 1..=20 {
        let run = stream
            .run(&id, "n = n + 1\nprint(n)")
            .await
            .expect("cell")
            .ok();
        assert_eq!(run.out(), format!("{i}\n"));
    }
    // Cells of another session may share the stream.
    assert_eq!(
        stream
            .run(&other, "print('other')")
            .await
            .expect("cell")
            .ok()
            .out(),
        "other\n"
    );
    let missing = stream
        .run("s-nope", "1")
        .await
        .expect_err("unknown session ends the stream");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    sandbox.destroy(&id).await;
    sandbox.destroy(&other).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn other_limits_are_served_by_relimiting_a_pool_session() {
    let (_dir, _agent, mut sandbox) = agent_with("relimit", &[("RLM_AGENT_POOL_SIZE", "1")]).await;
    sandbox.wait_pool_ready(0, 1).await.expect("pool fills");
    let limits = SessionLimits {
        memory_bytes: 128 << 20,
        max_pids: 16,
        cpu_millicores: 500,
        ..Default::default()
    };
    let custom = sandbox.create(Some(limits), Vec::new()).await;
    assert!(custom.from_warm_pool, "{custom:?}");
    assert_eq!(custom.profile, "mem128Mi-cpu500m-pids16-tmp64Mi");
    // It lives under its own limits, not the pool's (64 pids, 512 MiB): 15
    // threads beside the main one, then EAGAIN; 200 MiB is more than it may have.
    let threads = sandbox
        .run(
            &custom.session_id,
            "import threading\nstop = threading.Event()\nstarted = 0\n\
             try:\n    for _ in range(40):\n        threading.Thread(target=stop.wait).start()\n        started += 1\n\
             except RuntimeError as e:\n    print(started, e)\nstop.set()",
        )
        .await
        .ok();
    assert_eq!(threads.out(), "15 can't start new thread\n");
    let bomb = sandbox
        .run(&custom.session_id, "block = bytearray(200 << 20)")
        .await;
    assert!(
        bomb.result.session_ended && bomb.result.end_reason() == SessionEndReason::OomKilled,
        "{:?}",
        bomb.result
    );
    // Raising works as well: the refilled pool session becomes a 1 GiB one
    // that holds what the pool's 512 MiB could not.
    sandbox.wait_pool_ready(0, 1).await.expect("pool fills");
    let big = sandbox
        .create(
            Some(SessionLimits {
                memory_bytes: 1 << 30,
                ..Default::default()
            }),
            Vec::new(),
        )
        .await;
    assert!(big.from_warm_pool, "{big:?}");
    let held = sandbox
        .run(
            &big.session_id,
            "block = bytearray(700 << 20)\nprint(len(block) >> 20)",
        )
        .await
        .ok();
    assert_eq!(held.out(), "700\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_pool_profiles_serve_their_sessions_warm() {
    let (_dir, _agent, mut sandbox) = agent_with(
        "profiles",
        &[
            ("RLM_AGENT_POOL_PROFILES", "mem=128,pids=32:1"),
            ("RLM_AGENT_POOL_SIZE", "0"),
        ],
    )
    .await;
    let info = sandbox
        .client
        .get_info(GetInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    let names: Vec<&str> = info.pools.iter().map(|p| p.profile.as_str()).collect();
    assert_eq!(
        names,
        [
            "mem512Mi-cpu1000m-pids64-tmp64Mi",
            "mem128Mi-cpu1000m-pids32-tmp64Mi"
        ]
    );
    sandbox.wait_pool_ready(1, 1).await.expect("pool fills");
    let limits = SessionLimits {
        memory_bytes: 128 << 20,
        max_pids: 32,
        ..Default::default()
    };
    let created = sandbox.create(Some(limits), Vec::new()).await;
    assert!(created.from_warm_pool, "{created:?}");
    // The default pool is sized 0 here, and other mounts cannot be served
    // by re-limiting the configured pool's sessions.
    let other = sandbox
        .create(
            Some(SessionLimits {
                tmpfs_bytes: 16 << 20,
                ..Default::default()
            }),
            Vec::new(),
        )
        .await;
    assert!(!other.from_warm_pool, "{other:?}");
    let run = sandbox
        .run(
            &created.session_id,
            "print(open('/proc/self/status').read().count('Threads'))",
        )
        .await
        .ok();
    assert_eq!(run.out(), "1\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_see_the_same_sys_path_as_the_interpreter_with_site() {
    let expected = std::process::Command::new("/usr/bin/python3")
        .args(["-I", "-c", "import sys; print(sys.path)"])
        .output()
        .expect("host python");
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let run = sandbox.run(&id, "import sys; print(sys.path)").await.ok();
    assert_eq!(run.out(), String::from_utf8_lossy(&expected.stdout));
    sandbox.destroy(&id).await;
}
