//! What a node reads from its ledger's head state and keeps between
//! blocks: the state itself (`LedgerState`), the validator set in force
//! (`Membership`), the departments in force (`InForce`) and the revoked
//! certificates (`Revocations`). Below the services, the driver and the
//! TLS checks that use them; the driver refreshes them after a block that
//! changes them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use govchain_crypto::Digest;
use govchain_exec::{Department, Departments, StateError, StateRead, TreeRead};
use govchain_ledger::{HeadView, Ledger};
use govchain_pbft::ValidatorSet;
use govchain_pki::Genesis;
use govchain_proto::types::v1::ValidatorSetRecord;

/// The validator set in force, as governance keeps it in world state.
#[derive(Debug)]
pub struct Membership {
    pub record: ValidatorSetRecord,
    pub set: ValidatorSet,
}

impl Membership {
    pub(crate) fn read(ledger: &Ledger, departments: &Departments) -> anyhow::Result<Self> {
        let state = LedgerState(ledger);
        let record = govchain_exec::governance::current_set(&state, departments)?;
        let set = govchain_exec::governance::validator_set(&record)?;
        Ok(Self { record, set })
    }

    /// The index of the member whose node has this TLS identity.
    pub fn index_of_identity(&self, tls_identity: &str) -> Option<u32> {
        self.record
            .members
            .iter()
            .find(|m| m.tls_identity == tls_identity)
            .map(|m| m.index)
    }
}

/// The departments in force, as governance keeps them in world state
/// (`exec::governance::departments_in_force`): re-read after a block that
/// changes them. Shared with `tls::Members`, which admits the certificates
/// of departments governance registered.
#[derive(Debug)]
pub struct InForce {
    pub(crate) genesis: Arc<Departments>,
    current: RwLock<Arc<Departments>>,
}

impl InForce {
    pub fn new(genesis: Arc<Departments>) -> Self {
        Self {
            current: RwLock::new(genesis.clone()),
            genesis,
        }
    }

    /// Reads the departments again from the head state.
    pub fn refresh(&self, ledger: &Ledger) -> anyhow::Result<()> {
        let departments =
            govchain_exec::governance::departments_in_force(&LedgerState(ledger), &self.genesis)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = departments;
        Ok(())
    }

    pub fn get(&self) -> Arc<Departments> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The certificates governance revoked, as every connection checks them:
/// the TLS streams the node serves (`connections::Revocable`), the
/// interceptor in front of every RPC (`tls::Members`) and the consensus
/// stream. `generation` changes with each refresh, so a connection re-checks
/// its certificate only then.
#[derive(Debug, Default)]
pub struct Revocations {
    list: RwLock<Arc<govchain_proto::types::v1::RevocationList>>,
    generation: std::sync::atomic::AtomicU64,
}

impl Revocations {
    /// Reads the list again from the head state (after a block that wrote
    /// it).
    pub fn refresh(&self, ledger: &Ledger) -> anyhow::Result<()> {
        self.set(govchain_exec::governance::revocations(&LedgerState(
            ledger,
        ))?);
        Ok(())
    }

    /// Replaces the list (what `refresh` does after reading it).
    pub fn set(&self, list: govchain_proto::types::v1::RevocationList) {
        *self
            .list
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(list);
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn list(&self) -> Arc<govchain_proto::types::v1::RevocationList> {
        self.list
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Why a certificate (DER) is refused, if governance revoked it.
    pub fn refusal(&self, der: &[u8]) -> Option<String> {
        let list = self.list();
        if list.revocations.is_empty() {
            return None;
        }
        let Ok(ids) = govchain_pki::certificate_ids(der) else {
            return Some("the certificate does not parse".into());
        };
        list.revocations.iter().find_map(|revocation| {
            let revoked = revocation.certificate.as_ref()?;
            govchain_exec::governance::revocation_covers(revoked, &ids.serial, &ids.key_fingerprint)
                .then(|| {
                    format!(
                        "certificate serial {} was revoked at block {} by proposal {}: {}",
                        ids.serial,
                        revocation.height,
                        hex::encode(&revocation.proposal_id),
                        revocation.reason
                    )
                })
        })
    }
}

/// The departments of genesis, as execution wants them. Genesis was
/// validated when it was loaded, so every key parses.
/// The block limits genesis sets, with its departments.
pub fn block_limits(genesis: &Genesis) -> govchain_exec::BlockLimits {
    let consensus = &genesis.consensus;
    govchain_exec::BlockLimits {
        transactions_max: consensus.block_transactions_max,
        bytes_max: consensus.block_bytes_max,
        payload_bytes_max: consensus.transaction_payload_bytes_max,
        genesis_departments: Arc::new(departments(genesis)),
    }
}

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
    .with_genesis_validators(
        genesis
            .validators
            .iter()
            .filter_map(|validator| {
                let key = govchain_crypto::PublicKey::from_hex(&validator.consensus_public_key);
                Some((validator.name.clone(), key.ok()?))
            })
            .collect(),
    )
}

/// World state at the head of the ledger, each read from the newest
/// commit: for a few reads outside execution. Executing a block reads
/// through [`HeadState`] instead.
pub struct LedgerState<'a>(pub &'a Ledger);

/// World state and its tree at one head, from one ledger read snapshot: a
/// block's execution reads many keys and tree nodes, and one snapshot for
/// all of them costs one read transaction instead of one per read (and
/// they all see the same head); proofs and state snapshots need their
/// reads to agree.
pub struct HeadState(pub HeadView);

impl HeadState {
    /// The state at the ledger's head, which must be block `height` with
    /// `hash`: what the caller is executing on.
    pub fn at(ledger: &Ledger, height: u64, hash: &Digest) -> Result<Self, StateError> {
        let view = ledger
            .head_view()
            .map_err(|err| StateError::Read(err.to_string()))?;
        let head = view.head();
        if head.height != height || head.hash != *hash {
            return Err(StateError::Read(format!(
                "the ledger's head is block {} ({}), not block {height} ({hash}) being built on",
                head.height, head.hash
            )));
        }
        Ok(Self(view))
    }
}

impl StateRead for HeadState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.0
            .state(key)
            .map_err(|err| StateError::Read(err.to_string()))
    }
}

impl TreeRead for HeadState {
    fn tree_node(&self, path: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.0
            .state_tree_node(path)
            .map_err(|err| StateError::Read(err.to_string()))
    }
}

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

#[cfg(test)]
mod tests {
    use govchain_crypto::DomainHasher;

    use super::*;

    #[test]
    fn head_state_is_taken_only_at_the_head_being_built_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let genesis = DomainHasher::new("genesis").u64(1).finish();
        let ledger = Ledger::open(dir.path(), "c", genesis).expect("open");
        let state = HeadState::at(&ledger, 0, &genesis).expect("at the head");
        assert_eq!(state.get(b"missing").expect("read"), None);
        assert_eq!(state.tree_node(b"").expect("read"), None);
        let other = DomainHasher::new("block").u64(1).finish();
        let Err(StateError::Read(message)) = HeadState::at(&ledger, 1, &other) else {
            panic!("a head the ledger does not have must be refused");
        };
        assert!(
            message.contains("head is block 0") && message.contains("not block 1"),
            "{message}"
        );
        assert!(
            HeadState::at(&ledger, 0, &other).is_err(),
            "same height, other hash"
        );
    }
}
