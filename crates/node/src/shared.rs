//! State shared by the gRPC services and the consensus driver.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use govchain_crypto::Digest;
use govchain_exec::{BlockLimits, Department, Departments, Head, StateError, StateRead, TreeRead};
use govchain_ledger::Ledger;
use govchain_pbft::ValidatorSet;
use govchain_pki::Genesis;
use govchain_proto::types::v1::CommittedBlock;
use tokio::sync::broadcast;

use crate::blobs::Blobs;
use crate::dissemination::BatchStore;
use crate::limits::Slots;
use crate::mempool::Mempool;
use crate::peers::PeerSet;
use crate::readiness::Readiness;

/// Committed blocks kept for slow subscribers before they must re-read the
/// ledger.
pub const SUBSCRIBERS_BLOCKS_BUFFERED_MAX: usize = 256;

pub struct Shared {
    /// A backup replica: follows the chain, serves reads, takes no writes.
    pub observer: bool,
    pub name: String,
    pub index: u32,
    pub genesis: Genesis,
    pub genesis_hash: Digest,
    pub validators: ValidatorSet,
    pub limits: BlockLimits,
    pub ledger: Arc<Ledger>,
    pub blobs: Arc<Blobs>,
    mempool: Mutex<Mempool>,
    /// Batches of admitted transactions, by digest (see `dissemination`).
    batches: Mutex<BatchStore>,
    pub peers: PeerSet,
    pub blocks: broadcast::Sender<Arc<CommittedBlock>>,
    pub view: AtomicU64,
    /// False while a view change is in progress.
    pub view_normal: AtomicBool,
    /// Consensus messages refused as faulty since start (see the log for
    /// each one's sender and reason).
    pub rejected_messages: AtomicU64,
    /// Set when the mempool changed and the driver has not been told.
    pub mempool_changed: AtomicBool,
    /// Open block subscriptions and uploads, by department.
    pub subscriptions: Arc<Slots>,
    pub uploads: Arc<Slots>,
    pub feeds: Arc<Slots>,
    /// Whether the node is caught up (`readiness::watch` keeps it).
    pub readiness: Readiness,
    /// Where `/metrics` is served, once its listener is bound.
    pub metrics_url: std::sync::OnceLock<String>,
    /// Where the web portal is served, once its listener is bound.
    pub portal_url: std::sync::OnceLock<String>,
    /// Admission spans of traced transactions, for their block's span.
    pub traces: crate::telemetry::trace_context::TransactionTraces,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        observer: bool,
        name: String,
        index: u32,
        genesis: Genesis,
        validators: ValidatorSet,
        ledger: Arc<Ledger>,
        blobs: Arc<Blobs>,
        mempool: Mempool,
        peers: PeerSet,
    ) -> Self {
        let consensus = &genesis.consensus;
        let limits = BlockLimits {
            transactions_max: consensus.block_transactions_max,
            bytes_max: consensus.block_bytes_max,
            payload_bytes_max: consensus.transaction_payload_bytes_max,
            departments: Arc::new(departments(&genesis)),
        };
        let (blocks, _) = broadcast::channel(SUBSCRIBERS_BLOCKS_BUFFERED_MAX);
        Self {
            observer,
            name,
            index,
            genesis_hash: genesis.hash(),
            genesis,
            validators,
            limits,
            ledger,
            blobs,
            mempool: Mutex::new(mempool),
            batches: Mutex::new(BatchStore::default()),
            peers,
            blocks,
            view: AtomicU64::new(0),
            view_normal: AtomicBool::new(true),
            mempool_changed: AtomicBool::new(false),
            rejected_messages: AtomicU64::new(0),
            subscriptions: Slots::subscriptions(),
            uploads: Slots::uploads(),
            feeds: Slots::feeds(),
            readiness: Readiness::default(),
            metrics_url: std::sync::OnceLock::new(),
            portal_url: std::sync::OnceLock::new(),
            traces: Default::default(),
        }
    }

    pub fn chain_id(&self) -> &str {
        &self.genesis.chain_id
    }

    /// The mempool lock. Held only for in-memory work, never across I/O.
    pub fn mempool(&self) -> MutexGuard<'_, Mempool> {
        // A panic while holding the lock is a bug that already crashed a
        // task; the mempool's own invariants hold between method calls.
        self.mempool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The batch store lock. Held only for in-memory work, never across I/O.
    pub fn batches(&self) -> MutexGuard<'_, BatchStore> {
        self.batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn head(&self) -> Head {
        let head = self.ledger.head();
        Head {
            height: head.height,
            hash: head.hash,
            state_root: head.state_root,
            timestamp_ms: head.timestamp_ms,
        }
    }

    pub fn validator_name(&self, index: u32) -> &str {
        self.genesis
            .validators
            .get(index as usize)
            .map_or("?", |v| v.name.as_str())
    }

    pub fn current_view(&self) -> u64 {
        self.view.load(Ordering::Relaxed)
    }
}

/// The departments of genesis, as execution wants them. Genesis was
/// validated when it was loaded, so every key parses.
pub fn departments(genesis: &Genesis) -> Departments {
    Departments::new(genesis.departments.iter().filter_map(|entry| {
        let node_key = genesis
            .validators
            .iter()
            .find(|validator| validator.name == entry.name)
            .and_then(|validator| {
                govchain_crypto::PublicKey::from_hex(&validator.consensus_public_key).ok()
            });
        Some(Department {
            name: entry.name.clone(),
            public_key: govchain_crypto::PublicKey::from_hex(&entry.signing_public_key).ok()?,
            attests: entry.attests.iter().cloned().collect(),
            node_key,
        })
    }))
}

/// World state at the head of the ledger.
pub struct LedgerState<'a>(pub &'a Ledger);

impl StateRead for LedgerState<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.0
            .state(key)
            .map_err(|err| StateError::Read(err.to_string()))
    }
}

impl TreeRead for LedgerState<'_> {
    fn tree_node(&self, path: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.0
            .state_tree_node(path)
            .map_err(|err| StateError::Read(err.to_string()))
    }
}
