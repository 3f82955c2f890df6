//! The orchestrator's view of a sandbox session against the real agent: cells
//! on one long-lived Execute stream, sub-calls answered concurrently and out
//! of order while output keeps flowing. Needs root (isolated agent).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rlm_common::listen::Address;
use rlm_e2e::sandbox::shared_agent;
use rlm_orchestrator::remote_session::RemoteSession;
use rlm_orchestrator::sandbox_client::SandboxConnection;
use rlm_proto::rlm::sandbox::v1::{
    CreateSessionRequest, SubcallRequest, SubcallResult, subcall_result,
};

/// Sub-call requests being answered right now, and the most seen at once.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MOST_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

async fn answer(request: SubcallRequest) -> Vec<SubcallResult> {
    let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
    let mut results = Vec::new();
    for prompt in &request.prompts {
        // Later prompts answer sooner, so answers complete out of order.
        let delay: u64 = prompt.trim_start_matches('p').parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(500 - 80 * delay.min(4))).await;
        results.push(SubcallResult {
            outcome: Some(subcall_result::Outcome::Text(format!("answer to {prompt}"))),
        });
    }
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    results
}

#[tokio::test(flavor = "multi_thread")]
async fn cells_share_one_stream_and_subcalls_run_concurrently() {
    let agent = shared_agent();
    let connection = SandboxConnection::new(Address::parse(&agent.address).expect("address"))
        .expect("connection");
    let mut session = RemoteSession::create(&connection, CreateSessionRequest::default())
        .await
        .expect("create");
    let first = session
        .run("n = 1\nprint('n', n)", Duration::from_secs(10), answer)
        .await
        .expect("cell");
    assert_eq!(first.stdout, b"n 1\n");

    // Five threads each make one llm_query; answers take 180-500 ms, later
    // prompts sooner, so they complete out of order. All five must be
    // outstanding at once (the cell's threads all block until answered).
    let code = "from concurrent.futures import ThreadPoolExecutor\n\
                with ThreadPoolExecutor(5) as pool:\n    \
                    answers = list(pool.map(llm_query, ['p0', 'p1', 'p2', 'p3', 'p4']))\n\
                print(answers)\nprint('n', n + 1)";
    let run = session
        .run(code, Duration::from_secs(10), answer)
        .await
        .expect("cell");
    assert!(
        run.result.error.is_none(),
        "{:?} {}",
        run.result,
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "['answer to p0', 'answer to p1', 'answer to p2', 'answer to p3', 'answer to p4']\nn 2\n"
    );
    assert_eq!(run.result.subcalls, 5);
    assert_eq!(
        MOST_IN_FLIGHT.load(Ordering::SeqCst),
        5,
        "the five sub-calls were not all in flight at once"
    );
    assert!(session.destroy().await.expect("destroy"));
}
