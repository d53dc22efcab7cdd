//! State shared by the gRPC services and the consensus driver.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use govchain_crypto::Digest;
use govchain_exec::{BlockLimits, Departments, Head};
use govchain_ledger::Ledger;
use govchain_pki::Genesis;
use govchain_proto::types::v1::CommittedBlock;
use tokio::sync::broadcast;

use crate::batches::{Batch, BatchStore};
use crate::blobs::Blobs;
use crate::chain_state::{InForce, Membership, Revocations};
use crate::limits::Slots;
use crate::mempool::Mempool;
use crate::peers::PeerSet;

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
    /// The validator set in force for the block after the head; the driver
    /// replaces it when a block announces a new one.
    membership: RwLock<Arc<Membership>>,
    /// Certificates governance revoked (see `Revocations`).
    pub revocations: Arc<Revocations>,
    /// The departments in force (see `InForce`; read with `departments`).
    pub departments_in_force: Arc<InForce>,
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
    /// Whether this node runs a replica (a validator in the set in force);
    /// false on an observer and after governance removed it.
    pub voting: AtomicBool,
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
        departments: Arc<InForce>,
        observer: bool,
        name: String,
        index: u32,
        genesis: Genesis,
        ledger: Arc<Ledger>,
        blobs: Arc<Blobs>,
        mempool: Mempool,
        peers: PeerSet,
    ) -> anyhow::Result<Self> {
        let consensus = &genesis.consensus;
        let limits = BlockLimits {
            transactions_max: consensus.block_transactions_max,
            bytes_max: consensus.block_bytes_max,
            payload_bytes_max: consensus.transaction_payload_bytes_max,
            genesis_departments: departments.genesis.clone(),
        };
        let (blocks, _) = broadcast::channel(SUBSCRIBERS_BLOCKS_BUFFERED_MAX);
        let membership = Membership::read(&ledger, &limits.genesis_departments)?;
        let revocations = Arc::new(Revocations::default());
        revocations.refresh(&ledger)?;
        Ok(Self {
            observer,
            name,
            index,
            genesis_hash: genesis.hash(),
            genesis,
            membership: RwLock::new(Arc::new(membership)),
            revocations,
            departments_in_force: departments,
            limits,
            ledger,
            blobs,
            mempool: Mutex::new(mempool),
            batches: Mutex::new(BatchStore::default()),
            peers,
            blocks,
            view: AtomicU64::new(0),
            view_normal: AtomicBool::new(true),
            voting: AtomicBool::new(false),
            mempool_changed: AtomicBool::new(false),
            rejected_messages: AtomicU64::new(0),
            subscriptions: Slots::subscriptions(),
            uploads: Slots::uploads(),
            feeds: Slots::feeds(),
            readiness: Readiness::default(),
            metrics_url: std::sync::OnceLock::new(),
            portal_url: std::sync::OnceLock::new(),
            traces: Default::default(),
        })
    }

    /// The validator set in force for the block after the head.
    pub fn membership(&self) -> Arc<Membership> {
        self.membership
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the set in force again from the ledger's head state (after a
    /// block that announced a new one).
    pub fn refresh_membership(&self) -> anyhow::Result<Arc<Membership>> {
        let membership = Arc::new(Membership::read(
            &self.ledger,
            &self.limits.genesis_departments,
        )?);
        *self
            .membership
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = membership.clone();
        Ok(membership)
    }

    /// The departments in force for the block after the head: everything
    /// that authorises or names a department reads them here.
    pub fn departments(&self) -> Arc<Departments> {
        self.departments_in_force.get()
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

    /// Seals admitted transactions into batches within the bounds, keeps
    /// them and forwards them to every peer: dissemination's first step,
    /// taken by admission for its clients' transactions and by the primary
    /// for any it proposes that no batch holds yet. The first batch carries
    /// `trace_context`.
    pub fn seal(
        &self,
        transactions: &[govchain_exec::VerifiedTransaction],
        mut trace_context: std::collections::HashMap<String, String>,
    ) -> Vec<Arc<Batch>> {
        let mut sealed = Vec::new();
        for (batch, ids) in crate::batches::cut(transactions) {
            self.batches().insert(batch.clone(), &ids);
            let mut wire = batch.to_wire();
            wire.trace_context = std::mem::take(&mut trace_context);
            tracing::debug!(node = %self.name, digest = %batch.digest.short(), transactions = ids.len(), "sealed batch");
            self.peers
                .broadcast(&govchain_proto::consensus::v1::StreamRequest {
                    kind: Some(
                        govchain_proto::consensus::v1::stream_request::Kind::Transactions(wire),
                    ),
                });
            sealed.push(batch);
        }
        sealed
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

    /// The department of validator `index` in the set in force, else in
    /// genesis (a validator removed since), else "?".
    pub fn validator_name(&self, index: u32) -> String {
        let membership = self.membership();
        if let Some(member) = membership.record.members.iter().find(|m| m.index == index) {
            return member.department.clone();
        }
        self.genesis
            .validators
            .get(index as usize)
            .map_or_else(|| "?".to_owned(), |v| v.name.clone())
    }

    pub fn current_view(&self) -> u64 {
        self.view.load(Ordering::Relaxed)
    }
}

/// What the node knows about its own progress; read by `GetStatus`.
#[derive(Debug)]
pub struct Readiness {
    pub(crate) syncing: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        // Starting counts as syncing.
        Self {
            syncing: AtomicBool::new(true),
        }
    }
}

impl Readiness {
    pub fn syncing(&self) -> bool {
        self.syncing.load(Ordering::Acquire)
    }
}
