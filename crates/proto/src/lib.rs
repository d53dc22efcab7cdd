//! Rust types and gRPC stubs generated from the `.proto` files in `proto/`.
//!
//! **Boundary:** the `.proto` files are the public API that department systems
//! generate clients from; this crate only mirrors them. Without the `grpc`
//! feature it holds the messages alone, with no dependency on tonic.
#![forbid(unsafe_code)]
#![allow(clippy::all, clippy::pedantic)]

#[cfg(feature = "grpc")]
pub mod codec;

macro_rules! package {
    ($file:literal) => {
        include!(concat!(env!("OUT_DIR"), "/messages/", $file));
        #[cfg(feature = "grpc")]
        include!(concat!(env!("OUT_DIR"), "/services/", $file));
    };
}

pub mod types {
    pub mod v1 {
        // Messages only: this package has no services.
        include!(concat!(env!("OUT_DIR"), "/messages/govchain.types.v1.rs"));
    }
}

pub mod node {
    pub mod v1 {
        package!("govchain.node.v1.rs");
    }
}

pub mod consensus {
    pub mod v1 {
        package!("govchain.consensus.v1.rs");
    }
}

pub mod blob {
    pub mod v1 {
        package!("govchain.blob.v1.rs");
    }
}

pub mod identity {
    pub mod v1 {
        package!("govchain.identity.v1.rs");
    }
}

pub mod admin {
    pub mod v1 {
        package!("govchain.admin.v1.rs");
    }
}

pub mod approval {
    pub mod v1 {
        package!("govchain.approval.v1.rs");
    }
}

pub mod directory {
    pub mod v1 {
        package!("govchain.directory.v1.rs");
    }
}

/// The encoded `FileDescriptorSet` of every govchain service, for gRPC
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/govchain_descriptor.bin"));
