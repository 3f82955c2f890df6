//! Generated code for the RLM Runtime contracts.
//!
//! `rlm.v1` is the public completion API served by rlm-orchestrator;
//! `rlm.sandbox.v1` is the internal API of the privileged rlm-sandbox-agent.

#![allow(clippy::all, missing_docs)]

pub mod rlm {
    pub mod v1 {
        tonic::include_proto!("rlm.v1");
    }
    pub mod sandbox {
        pub mod v1 {
            tonic::include_proto!("rlm.sandbox.v1");
        }
    }
}

/// Encoded `FileDescriptorSet` of every file above, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rlm_descriptor");
