//! Rust types and gRPC stubs generated from the `.proto` files in `proto/`.
//!
//! **Boundary:** the `.proto` files are the public API that department systems
//! generate clients from; this crate only mirrors them.
#![forbid(unsafe_code)]
#![allow(clippy::all, clippy::pedantic)]

pub mod codec;

pub mod types {
    pub mod v1 {
        tonic::include_proto!("govchain.types.v1");
    }
}

pub mod node {
    pub mod v1 {
        tonic::include_proto!("govchain.node.v1");
    }
}

pub mod consensus {
    pub mod v1 {
        tonic::include_proto!("govchain.consensus.v1");
    }
}

/// The encoded `FileDescriptorSet` of every govchain service, for gRPC
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("govchain_descriptor");
