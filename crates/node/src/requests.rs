//! The requests that flow against the pipeline: the driver (and the
//! readiness watch) ask the sync task to catch up, and the driver asks the
//! fetcher for batches a proposal names that this node lacks. Their own
//! module, below both ends, so that neither imports the other.

use govchain_crypto::Digest;

/// "Catch up to `target`; these peers have it."
#[derive(Debug)]
pub struct SyncRequest {
    pub target: u64,
    pub peers: Vec<u32>,
}

/// "Get these batches; `first` (the proposer) should have them."
#[derive(Debug)]
pub struct FetchRequest {
    pub digests: Vec<Digest>,
    pub first: u32,
}
