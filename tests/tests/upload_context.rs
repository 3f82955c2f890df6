//! A multi-megabyte context uploaded in chunks through the orchestrator lands once,
//! content-addressed and read-only, in the agent's store.

use rlm_e2e::{Stack, channel};
use rlm_proto::rlm::v1::UploadContextRequest;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use std::os::unix::fs::PermissionsExt;

fn chunks(data: &[u8], first: UploadContextRequest) -> Vec<UploadContextRequest> {
    let mut out = vec![first];
    out.extend(data.chunks(1 << 20).map(|c| UploadContextRequest {
        chunk: c.to_vec(),
        ..Default::default()
    }));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_is_stored_once_by_content() {
    let stack = Stack::start(&[]).await;
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest = {
        let output = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(&data)?;
                child.wait_with_output()
            })
            .expect("sha256sum");
        String::from_utf8_lossy(&output.stdout)[..64].to_owned()
    };
    let mut client = RlmServiceClient::new(channel(&stack.grpc_address).await.expect("connect"));
    let first = UploadContextRequest {
        total_size_bytes: data.len() as u64,
        ..Default::default()
    };
    let stored = client
        .upload_context(futures::stream::iter(chunks(&data, first)))
        .await
        .expect("upload")
        .into_inner();
    assert_eq!(stored.context_id, format!("sha256:{digest}"));
    assert_eq!(stored.size_bytes, data.len() as u64);
    let blob = stack.dir.path().join("agent/contexts/sha256").join(&digest);
    assert_eq!(std::fs::read(&blob).expect("blob"), data);
    assert_eq!(
        std::fs::metadata(&blob).expect("meta").permissions().mode() & 0o777,
        0o444
    );

    // Same bytes again, announced by digest: same id, nothing new written.
    let again = UploadContextRequest {
        expected_sha256: digest.clone(),
        ..Default::default()
    };
    let second = client
        .upload_context(futures::stream::iter(chunks(&data, again)))
        .await
        .expect("second upload")
        .into_inner();
    assert_eq!(second.context_id, stored.context_id);
    let count = std::fs::read_dir(stack.dir.path().join("agent/contexts/sha256"))
        .expect("dir")
        .count();
    assert_eq!(count, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_are_invalid_arguments_naming_the_field() {
    let stack = Stack::start(&[]).await;
    let mut client = RlmServiceClient::new(channel(&stack.grpc_address).await.expect("connect"));
    let cases = [
        (
            vec![UploadContextRequest {
                chunk: b"abc".to_vec(),
                expected_sha256: "xyz".into(),
                ..Default::default()
            }],
            "expected_sha256",
        ),
        (
            vec![UploadContextRequest {
                chunk: b"abc".to_vec(),
                expected_sha256: "0".repeat(64),
                ..Default::default()
            }],
            "expected_sha256",
        ),
        (
            vec![UploadContextRequest {
                chunk: b"abc".to_vec(),
                total_size_bytes: 4,
                ..Default::default()
            }],
            "total_size_bytes",
        ),
        (Vec::new(), "chunk"),
    ];
    for (messages, field) in cases {
        let status = client
            .upload_context(futures::stream::iter(messages))
            .await
            .expect_err("rejected");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(field),
            "{field} not named in {status:?}"
        );
    }
    assert_eq!(
        std::fs::read_dir(stack.dir.path().join("agent/contexts/sha256"))
            .expect("dir")
            .count(),
        0,
        "nothing stored from rejected uploads"
    );
}
