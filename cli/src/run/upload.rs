//! `UploadContext`: a context sent in 1 MiB chunks with its SHA-256 and size
//! declared up front, so the server verifies what it stores.

use std::sync::Arc;

use rlm_proto::rlm::v1::UploadContextRequest;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::exit::Failure;

/// Bytes per upload message.
pub const CHUNK: usize = 1 << 20;

/// The upload messages of `bytes`: at least one (an empty context is one
/// empty chunk); only the first declares the hash and the size.
pub fn requests(bytes: Vec<u8>) -> impl Iterator<Item = UploadContextRequest> + Send + 'static {
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let total = bytes.len() as u64;
    let chunks = bytes.len().div_ceil(CHUNK).max(1);
    let bytes = Arc::new(bytes);
    (0..chunks).map(move |i| {
        let start = i * CHUNK;
        let end = (start + CHUNK).min(bytes.len());
        UploadContextRequest {
            chunk: bytes[start..end].to_vec(),
            expected_sha256: if i == 0 {
                sha256.clone()
            } else {
                String::new()
            },
            total_size_bytes: if i == 0 { total } else { 0 },
        }
    })
}

/// Uploads `bytes` and returns the content id (`sha256:<hex>`).
pub async fn upload(
    client: &mut RlmServiceClient<Channel>,
    bytes: Vec<u8>,
) -> Result<String, Failure> {
    let expected = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let size = bytes.len() as u64;
    let response = client
        .upload_context(tokio_stream::iter(requests(bytes)))
        .await
        .map_err(|status| Failure::from_status(&status, "UploadContext"))?
        .into_inner();
    if response.context_id != expected || response.size_bytes != size {
        return Err(Failure::other(format!(
            "UploadContext stored {} ({} bytes) for content {expected} ({size} bytes)",
            response.context_id, response.size_bytes
        )));
    }
    Ok(response.context_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_declare_hash_and_size_once() {
        let data = vec![7_u8; CHUNK * 2 + 5];
        let reqs: Vec<_> = requests(data.clone()).collect();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].total_size_bytes, data.len() as u64);
        assert_eq!(reqs[0].expected_sha256, hex::encode(Sha256::digest(&data)));
        assert!(reqs[1].expected_sha256.is_empty() && reqs[2].total_size_bytes == 0);
        assert_eq!(reqs[2].chunk.len(), 5);
        assert_eq!(
            reqs.iter().map(|r| r.chunk.len()).sum::<usize>(),
            data.len()
        );
        let empty: Vec<_> = requests(Vec::new()).collect();
        assert_eq!(empty.len(), 1);
        assert_eq!(
            empty[0].expected_sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
