//! The genesis file: the chain id, the validator set and the consensus limits
//! that every node must agree on before the first block.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use govchain_crypto::{Digest, DomainHasher, PublicKey};
use serde::{Deserialize, Serialize};

use crate::files::{PUBLIC_FILE_MODE, write_atomic};
use crate::identity::{Role, TlsIdentity, validate_department};

/// PBFT needs at least one validator; more than 256 would make every quorum
/// certificate and view change too large for one message.
pub const VALIDATORS_MAX: usize = 256;
/// The chain id goes into logs, certificate names and signed digests.
pub const CHAIN_ID_BYTES_MAX: usize = 64;

const BLOCK_TRANSACTIONS_MAX_DEFAULT: u32 = 2000;
const BLOCK_BYTES_MAX_DEFAULT: u32 = 3 * 1024 * 1024;
/// The largest `block_bytes_max` genesis may set: a block with its header
/// framing and commit certificate (256 validators' signatures at most)
/// must fit the 4 MiB that gRPC clients receive by default, so that
/// `GetBlock` and `SubscribeBlocks` work with default clients in every
/// language.
pub const BLOCK_BYTES_MAX_LIMIT: u32 = 4 * 1024 * 1024 - 128 * 1024;
const VIEW_TIMEOUT_MS_DEFAULT: u64 = 2000;
const TRANSACTION_PAYLOAD_BYTES_MAX_DEFAULT: u32 = 64 * 1024;

const _: () = assert!(TRANSACTION_PAYLOAD_BYTES_MAX_DEFAULT <= BLOCK_BYTES_MAX_DEFAULT);
const _: () = assert!(BLOCK_BYTES_MAX_DEFAULT <= BLOCK_BYTES_MAX_LIMIT);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    /// In order: a validator's index is its position here.
    pub validators: Vec<ValidatorEntry>,
    #[serde(default)]
    pub consensus: ConsensusParams,
    /// Departments that sign transactions as institutions: attesting
    /// citizens' attributes and reading them under consent. Validators and
    /// observers may be listed, and so may departments without a node.
    /// Omitted from the JSON (and from the hash) when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departments: Vec<DepartmentEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentEntry {
    /// The department name, as in its certificates.
    pub name: String,
    /// Ed25519 key the department signs transactions with, 64 hex
    /// characters (`<department>/signing.key` from `certs init`).
    pub signing_public_key: String,
    /// Attribute names the department may attest, e.g. ["name", "photo"].
    #[serde(default)]
    pub attests: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorEntry {
    /// The department name.
    pub name: String,
    /// Ed25519 public key, 64 hex characters.
    pub consensus_public_key: String,
    /// The node's TLS identity URI, `spiffe://govchain/dept/<name>/node`.
    pub tls_identity: String,
}

/// Limits that live in genesis rather than in flags, so that nodes can not
/// disagree about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusParams {
    #[serde(default = "default_block_transactions_max")]
    pub block_transactions_max: u32,
    #[serde(default = "default_block_bytes_max")]
    pub block_bytes_max: u32,
    /// 0 means never produce empty blocks.
    #[serde(default)]
    pub empty_block_interval_ms: u64,
    #[serde(default = "default_view_timeout_ms")]
    pub view_timeout_ms: u64,
    #[serde(default = "default_transaction_payload_bytes_max")]
    pub transaction_payload_bytes_max: u32,
}

fn default_block_transactions_max() -> u32 {
    BLOCK_TRANSACTIONS_MAX_DEFAULT
}

fn default_block_bytes_max() -> u32 {
    BLOCK_BYTES_MAX_DEFAULT
}

fn default_view_timeout_ms() -> u64 {
    VIEW_TIMEOUT_MS_DEFAULT
}

fn default_transaction_payload_bytes_max() -> u32 {
    TRANSACTION_PAYLOAD_BYTES_MAX_DEFAULT
}

impl Default for ConsensusParams {
    fn default() -> Self {
        Self {
            block_transactions_max: BLOCK_TRANSACTIONS_MAX_DEFAULT,
            block_bytes_max: BLOCK_BYTES_MAX_DEFAULT,
            empty_block_interval_ms: 0,
            view_timeout_ms: VIEW_TIMEOUT_MS_DEFAULT,
            transaction_payload_bytes_max: TRANSACTION_PAYLOAD_BYTES_MAX_DEFAULT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    #[error("cannot read genesis {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write genesis {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("genesis {} is not valid genesis JSON: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("chain id {chain_id:?} is invalid: {reason}")]
    ChainId { chain_id: String, reason: String },
    #[error("genesis has {got} validators, expected 1 to {max}")]
    ValidatorCount { got: usize, max: usize },
    #[error("validator name {name:?} appears at index {first} and again at index {second}")]
    DuplicateName {
        name: String,
        first: usize,
        second: usize,
    },
    #[error("validators {first_name:?} and {second_name:?} have the same consensus key {key}")]
    DuplicateKey {
        key: String,
        first_name: String,
        second_name: String,
    },
    #[error(
        "validator {name:?} has consensus key {key:?} that is not an Ed25519 public key: {reason}"
    )]
    ConsensusKey {
        name: String,
        key: String,
        reason: String,
    },
    #[error("validator {name:?} has TLS identity {identity:?}: {reason}")]
    TlsIdentity {
        name: String,
        identity: String,
        reason: String,
    },
    #[error("validator {name:?} has TLS identity {identity:?}, expected {expected:?}")]
    IdentityMismatch {
        name: String,
        identity: String,
        expected: String,
    },
    #[error("department {name:?} in genesis is invalid: {reason}")]
    Department { name: String, reason: String },
    #[error("consensus.{field} is 0; it must be at least 1")]
    ZeroLimit { field: &'static str },
    #[error(
        "consensus.transaction_payload_bytes_max {payload} exceeds consensus.block_bytes_max {block}, so a full transaction could never fit in a block"
    )]
    PayloadExceedsBlock { payload: u32, block: u32 },
}

impl Genesis {
    /// Reads and validates a genesis file: a node must never start from a
    /// genesis that [`Genesis::validate`] rejects.
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let text = fs::read_to_string(path).map_err(|source| GenesisError::Read {
            path: path.to_owned(),
            source,
        })?;
        let genesis: Genesis = serde_json::from_str(&text).map_err(|err| GenesisError::Parse {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
        genesis.validate()?;
        Ok(genesis)
    }

    /// Writes pretty JSON, mode 0644; its bytes do not matter to [`Genesis::hash`].
    ///
    /// # Panics
    ///
    /// Never in practice: serializing a `Genesis` can not fail.
    pub fn write(&self, path: &Path) -> Result<(), GenesisError> {
        let mut text = serde_json::to_string_pretty(self)
            .expect("a Genesis has only string and integer fields, which always serialize");
        text.push('\n');
        write_atomic(path, text.as_bytes(), PUBLIC_FILE_MODE).map_err(|source| {
            GenesisError::Write {
                path: path.to_owned(),
                source,
            }
        })
    }

    pub fn validate(&self) -> Result<(), GenesisError> {
        validate_chain_id(&self.chain_id)?;
        if self.validators.is_empty() || self.validators.len() > VALIDATORS_MAX {
            return Err(GenesisError::ValidatorCount {
                got: self.validators.len(),
                max: VALIDATORS_MAX,
            });
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut keys: HashMap<PublicKey, &str> = HashMap::new();
        for (index, validator) in self.validators.iter().enumerate() {
            if let Some(first) = names.insert(&validator.name, index) {
                return Err(GenesisError::DuplicateName {
                    name: validator.name.clone(),
                    first,
                    second: index,
                });
            }
            let key = validator.validate()?;
            if let Some(first_name) = keys.insert(key, &validator.name) {
                return Err(GenesisError::DuplicateKey {
                    key: key.to_hex(),
                    first_name: first_name.to_owned(),
                    second_name: validator.name.clone(),
                });
            }
        }
        self.validate_departments()?;
        self.consensus.validate()
    }

    fn validate_departments(&self) -> Result<(), GenesisError> {
        let mut names = HashSet::new();
        let mut keys: HashMap<PublicKey, &str> = HashMap::new();
        for department in &self.departments {
            let invalid = |reason: String| GenesisError::Department {
                name: department.name.clone(),
                reason,
            };
            validate_department(&department.name).map_err(|err| invalid(err.to_string()))?;
            if !names.insert(department.name.as_str()) {
                return Err(invalid("it is listed twice".into()));
            }
            let key = PublicKey::from_hex(&department.signing_public_key)
                .map_err(|err| invalid(format!("signing_public_key: {err}")))?;
            if let Some(first) = keys.insert(key, &department.name) {
                return Err(invalid(format!(
                    "it has the same signing key as department {first:?}"
                )));
            }
            for attribute in &department.attests {
                let valid = !attribute.is_empty()
                    && attribute.len() <= 64
                    && attribute.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    });
                if !valid {
                    return Err(invalid(format!(
                        "attests {attribute:?}, which is not an attribute name (1 to 64 of a-z, 0-9, '_', '-')"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The digest every node compares before talking consensus. It hashes the
    /// serialized struct, not the file, so whitespace and key order in
    /// `genesis.json` do not change it, but any value does.
    ///
    /// # Panics
    ///
    /// Never in practice: serializing a `Genesis` can not fail.
    pub fn hash(&self) -> Digest {
        let bytes = serde_json::to_vec(self)
            .expect("a Genesis has only string and integer fields, which always serialize");
        DomainHasher::new("govchain/genesis/v1")
            .bytes(&bytes)
            .finish()
    }

    /// The index of the validator whose node presents `identity`. A client
    /// identity is never a validator.
    pub fn validator_index_by_identity(&self, identity: &TlsIdentity) -> Option<u32> {
        if identity.role != Role::Node {
            return None;
        }
        let uri = identity.to_uri();
        let index = self
            .validators
            .iter()
            .position(|validator| validator.tls_identity == uri)?;
        u32::try_from(index).ok()
    }

    pub fn validator_index_by_name(&self, name: &str) -> Option<u32> {
        let index = self
            .validators
            .iter()
            .position(|validator| validator.name == name)?;
        u32::try_from(index).ok()
    }
}

impl ValidatorEntry {
    /// Checks the key and identity; returns the parsed key for the
    /// uniqueness check in [`Genesis::validate`].
    fn validate(&self) -> Result<PublicKey, GenesisError> {
        let key = PublicKey::from_hex(&self.consensus_public_key).map_err(|err| {
            GenesisError::ConsensusKey {
                name: self.name.clone(),
                key: self.consensus_public_key.clone(),
                reason: err.to_string(),
            }
        })?;
        let identity = TlsIdentity::parse_uri(&self.tls_identity).map_err(|err| {
            GenesisError::TlsIdentity {
                name: self.name.clone(),
                identity: self.tls_identity.clone(),
                reason: err.to_string(),
            }
        })?;
        let expected = TlsIdentity {
            department: self.name.clone(),
            role: Role::Node,
        };
        if identity != expected {
            return Err(GenesisError::IdentityMismatch {
                name: self.name.clone(),
                identity: self.tls_identity.clone(),
                expected: expected.to_uri(),
            });
        }
        Ok(key)
    }
}

impl ConsensusParams {
    /// Why a full block would break default gRPC clients, if it would: a
    /// chain made before the 3 MiB default (4 MiB then) still starts, and
    /// the node says so in its log.
    pub fn response_limit_warning(&self) -> Option<String> {
        (self.block_bytes_max > BLOCK_BYTES_MAX_LIMIT).then(|| {
            format!(
                "consensus.block_bytes_max {} is over {BLOCK_BYTES_MAX_LIMIT} (BLOCK_BYTES_MAX_LIMIT): a full block and its certificate do not fit the 4 MiB a default gRPC client receives, so clients must raise their receive limit for GetBlock and SubscribeBlocks",
                self.block_bytes_max
            )
        })
    }

    fn validate(&self) -> Result<(), GenesisError> {
        let limits = [
            (
                "block_transactions_max",
                u64::from(self.block_transactions_max),
            ),
            ("block_bytes_max", u64::from(self.block_bytes_max)),
            ("view_timeout_ms", self.view_timeout_ms),
            (
                "transaction_payload_bytes_max",
                u64::from(self.transaction_payload_bytes_max),
            ),
        ];
        if let Some((field, _)) = limits.iter().find(|(_, value)| *value == 0) {
            return Err(GenesisError::ZeroLimit { field });
        }
        if self.transaction_payload_bytes_max > self.block_bytes_max {
            return Err(GenesisError::PayloadExceedsBlock {
                payload: self.transaction_payload_bytes_max,
                block: self.block_bytes_max,
            });
        }
        Ok(())
    }
}

/// A chain id is 1 to 64 printable ASCII characters without spaces, so it is
/// safe in certificate names, file names and log lines.
pub fn validate_chain_id(chain_id: &str) -> Result<(), GenesisError> {
    let invalid = |reason: &str| GenesisError::ChainId {
        chain_id: chain_id.to_owned(),
        reason: reason.to_owned(),
    };
    if chain_id.is_empty() {
        return Err(invalid("it is empty"));
    }
    if chain_id.len() > CHAIN_ID_BYTES_MAX {
        return Err(invalid(&format!(
            "it is {} bytes, at most {CHAIN_ID_BYTES_MAX} allowed",
            chain_id.len()
        )));
    }
    if !chain_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "it may only contain printable ASCII without spaces",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use govchain_crypto::SigningKey;

    use super::*;

    fn entry(name: &str, seed: u8) -> ValidatorEntry {
        ValidatorEntry {
            name: name.to_owned(),
            consensus_public_key: SigningKey::from_seed([seed; 32]).public_key().to_hex(),
            tls_identity: format!("spiffe://govchain/dept/{name}/node"),
        }
    }

    fn genesis() -> Genesis {
        Genesis {
            chain_id: "govchain-test".to_owned(),
            validators: vec![entry("health", 1), entry("tax", 2), entry("police", 3)],
            consensus: ConsensusParams::default(),
            departments: Vec::new(),
        }
    }

    fn department(name: &str, seed: u8, attests: &[&str]) -> DepartmentEntry {
        DepartmentEntry {
            name: name.to_owned(),
            signing_public_key: SigningKey::from_seed([seed; 32]).public_key().to_hex(),
            attests: attests.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn departments_validate_and_change_the_hash() {
        let mut genesis = genesis();
        let without = genesis.hash();
        genesis.departments = vec![
            department("health", 11, &["name", "date_of_birth"]),
            department("registry", 12, &[]),
        ];
        assert!(genesis.validate().is_ok());
        assert_ne!(genesis.hash(), without);
        let json = serde_json::to_string(&genesis).expect("json");
        assert!(
            json.contains("\"attests\":[\"name\",\"date_of_birth\"]"),
            "{json}"
        );
    }

    #[test]
    fn bad_departments_are_rejected() {
        let cases = [
            vec![department("health", 11, &[]), department("health", 12, &[])],
            vec![department("health", 11, &[]), department("tax", 11, &[])],
            vec![department("health", 11, &["Name"])],
            vec![department("Health!", 11, &[])],
            vec![DepartmentEntry {
                signing_public_key: "zz".into(),
                ..department("health", 11, &[])
            }],
        ];
        for departments in cases {
            let mut genesis = genesis();
            genesis.departments = departments.clone();
            assert!(
                matches!(genesis.validate(), Err(GenesisError::Department { .. })),
                "{departments:?}"
            );
        }
    }

    #[test]
    fn a_genesis_without_departments_keeps_its_old_hash_form() {
        // Chains created before departments existed must keep their hash:
        // an empty list is not serialized.
        let json = serde_json::to_string(&genesis()).expect("json");
        assert!(!json.contains("departments"), "{json}");
    }

    #[test]
    fn a_good_genesis_validates() {
        assert!(genesis().validate().is_ok());
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let mut genesis = genesis();
        genesis.validators[2] = entry("health", 9);
        let err = genesis.validate().expect_err("duplicate");
        assert!(
            matches!(&err, GenesisError::DuplicateName { name, first: 0, second: 2 } if name == "health"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let mut genesis = genesis();
        genesis.validators[1] = entry("tax", 1);
        assert!(matches!(
            genesis.validate(),
            Err(GenesisError::DuplicateKey { .. })
        ));
    }

    #[test]
    fn bad_keys_are_rejected() {
        for key in ["", "zz", &"00".repeat(31), &"ab".repeat(33)] {
            let mut genesis = genesis();
            genesis.validators[1].consensus_public_key = key.to_owned();
            let err = genesis.validate().expect_err("bad key");
            assert!(
                matches!(&err, GenesisError::ConsensusKey { name, .. } if name == "tax"),
                "{err}"
            );
        }
    }

    #[test]
    fn identity_must_be_the_node_of_the_same_department() {
        let mut genesis = genesis();
        genesis.validators[1].tls_identity = "spiffe://govchain/dept/health/node".to_owned();
        assert!(matches!(
            genesis.validate(),
            Err(GenesisError::IdentityMismatch { .. })
        ));
        genesis.validators[1].tls_identity = "spiffe://govchain/dept/tax/client".to_owned();
        assert!(matches!(
            genesis.validate(),
            Err(GenesisError::IdentityMismatch { .. })
        ));
        genesis.validators[1].tls_identity = "tax".to_owned();
        assert!(matches!(
            genesis.validate(),
            Err(GenesisError::TlsIdentity { .. })
        ));
    }

    #[test]
    fn validator_count_is_bounded() {
        let mut genesis = genesis();
        genesis.validators.clear();
        assert!(matches!(
            genesis.validate(),
            Err(GenesisError::ValidatorCount { got: 0, .. })
        ));
    }

    #[test]
    fn chain_id_rules() {
        for bad in ["", "has space", "tab\t", &"c".repeat(65), "ünï"] {
            assert!(validate_chain_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_chain_id(&"c".repeat(64)).is_ok());
    }

    #[test]
    fn limits_must_be_nonzero_and_consistent() {
        let mut genesis = genesis();
        genesis.consensus.view_timeout_ms = 0;
        let err = genesis.validate().expect_err("zero");
        assert!(err.to_string().contains("view_timeout_ms"), "{err}");
        let mut genesis = self::genesis();
        genesis.consensus.empty_block_interval_ms = 0;
        genesis.consensus.transaction_payload_bytes_max = genesis.consensus.block_bytes_max + 1;
        assert!(matches!(
            genesis.validate(),
            Err(GenesisError::PayloadExceedsBlock { .. })
        ));
    }

    #[test]
    fn a_block_over_a_default_grpc_response_is_warned_of() {
        let mut genesis = genesis();
        genesis.consensus.block_bytes_max = BLOCK_BYTES_MAX_LIMIT;
        assert_eq!(genesis.consensus.response_limit_warning(), None);
        // A chain made with the old 4 MiB default still validates.
        genesis.consensus.block_bytes_max = 4 * 1024 * 1024;
        assert!(genesis.validate().is_ok());
        let warning = genesis.consensus.response_limit_warning().expect("warned");
        assert!(warning.contains("BLOCK_BYTES_MAX_LIMIT"), "{warning}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let mut value = serde_json::to_value(genesis()).expect("to_value");
        value["consensus"]["block_size"] = serde_json::json!(5);
        assert!(serde_json::from_value::<Genesis>(value).is_err());
        let mut value = serde_json::to_value(genesis()).expect("to_value");
        value["validators"][0]["admin"] = serde_json::json!(true);
        assert!(serde_json::from_value::<Genesis>(value).is_err());
        let mut value = serde_json::to_value(genesis()).expect("to_value");
        value["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<Genesis>(value).is_err());
    }

    #[test]
    fn consensus_fields_have_defaults() {
        let mut value = serde_json::to_value(genesis()).expect("to_value");
        value["consensus"] = serde_json::json!({ "view_timeout_ms": 500 });
        let parsed: Genesis = serde_json::from_value(value).expect("parse");
        assert_eq!(parsed.consensus.view_timeout_ms, 500);
        assert_eq!(parsed.consensus.block_transactions_max, 2000);
        assert_eq!(parsed.consensus.block_bytes_max, 3 * 1024 * 1024);
        assert_eq!(parsed.consensus.transaction_payload_bytes_max, 64 * 1024);
        assert_eq!(parsed.consensus.empty_block_interval_ms, 0);
    }

    #[test]
    fn hash_ignores_formatting_but_not_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("genesis.json");
        let original = genesis();
        std::fs::write(&path, serde_json::to_string(&original).expect("json")).expect("write");
        assert_eq!(Genesis::load(&path).expect("load").hash(), original.hash());
        let mut changed = original.clone();
        changed.consensus.view_timeout_ms += 1;
        assert_ne!(changed.hash(), original.hash());
    }

    #[test]
    fn lookups() {
        let genesis = genesis();
        let tax = TlsIdentity::node("tax").expect("valid");
        assert_eq!(genesis.validator_index_by_identity(&tax), Some(1));
        let tax_client = TlsIdentity::client("tax").expect("valid");
        assert_eq!(genesis.validator_index_by_identity(&tax_client), None);
        assert_eq!(genesis.validator_index_by_name("police"), Some(2));
        assert_eq!(genesis.validator_index_by_name("civil"), None);
    }

    #[test]
    fn load_rejects_an_invalid_genesis() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("genesis.json");
        let mut genesis = genesis();
        genesis.chain_id.clear();
        genesis.write(&path).expect("write");
        assert!(matches!(
            Genesis::load(&path),
            Err(GenesisError::ChainId { .. })
        ));
    }
}
