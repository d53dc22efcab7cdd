//! The departments in force: their signing keys, the attribute names they
//! may attest and their nodes' consensus keys.
//!
//! Genesis lists the first ones. Governance (`ChangeDepartment`, and
//! `AddValidator` for the node key) changes them by vote; from the first
//! change on, the state holds the whole list under `gov/departments`
//! ([`DepartmentRegistry`]) and [`crate::governance::departments_in_force`]
//! reads it at the start of every block.
//!
//! **Invariant:** a signing key belongs to one department for the life of
//! the chain: a key in use or used before is never given again, so
//! [`Departments::name_at`] names the signer of any committed transaction
//! by the key and the height alone.
//!
//! **Invariant:** the registry keeps every department's whole history
//! (keys, attest permissions, node keys, with the heights they held), so
//! the departments in force at any height follow from the latest registry
//! alone ([`Departments::as_of`]): an offline replay of old transactions
//! (a case bundle) needs one proven value, not one per change.

use std::collections::{BTreeMap, BTreeSet};

use govchain_crypto::PublicKey;
use govchain_proto::types::v1::{
    DepartmentRecord, DepartmentRegistry, FormerAttests, FormerNodeKey, FormerSigningKey,
};

/// Longest department name: the rule of certificate names
/// (`pki::validate_department`), which this module repeats because
/// execution may not depend on the PKI crate.
pub const DEPARTMENT_NAME_BYTES_MAX: usize = 31;

/// A department in force: the key it signs transactions with and the
/// attribute names it may attest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Department {
    pub name: String,
    pub public_key: PublicKey,
    pub attests: BTreeSet<String>,
    /// The consensus key of the department's node, if it runs one: the key
    /// a holder signs blob receipts with
    /// ([`crate::identity::blob_receipt_digest`]).
    pub node_key: Option<PublicKey>,
}

/// What governance changed about a department: when its key and its
/// membership began, and the keys it used before.
#[derive(Clone, Debug, PartialEq, Eq)]
struct History {
    key_since_height: u64,
    member_since_height: u64,
    former_keys: Vec<FormerSigningKey>,
    former_attests: Vec<FormerAttests>,
    former_node_keys: Vec<FormerNodeKey>,
}

impl Default for History {
    /// A department as genesis lists it.
    fn default() -> Self {
        Self {
            key_since_height: 1,
            member_since_height: 1,
            former_keys: Vec::new(),
            former_attests: Vec::new(),
            former_node_keys: Vec::new(),
        }
    }
}

/// The departments in force, by signing key and by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Departments {
    by_key: BTreeMap<[u8; 32], Department>,
    by_name: BTreeMap<String, [u8; 32]>,
    /// Absent for a department as genesis lists it.
    history: BTreeMap<String, History>,
    /// Keys departments no longer sign with, to the department.
    former: BTreeMap<[u8; 32], String>,
    /// Genesis validators in genesis order (index = position): department
    /// and consensus key. The set before any governance change.
    genesis_validators: Vec<(String, PublicKey)>,
}

/// Whether `name` is a valid department name: a lowercase letter, then
/// lowercase letters, digits and `-`, at most 31 bytes.
pub fn valid_department_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= DEPARTMENT_NAME_BYTES_MAX
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

impl Departments {
    /// The caller (genesis validation) guarantees unique names and keys;
    /// a later duplicate replaces an earlier one.
    pub fn new(departments: impl IntoIterator<Item = Department>) -> Self {
        let mut registry = Self::default();
        for department in departments {
            registry.insert(department);
        }
        registry
    }

    fn insert(&mut self, department: Department) {
        let key = *department.public_key.as_bytes();
        self.by_name.insert(department.name.clone(), key);
        self.by_key.insert(key, department);
    }

    /// With the genesis validators, in genesis order.
    #[must_use]
    pub fn with_genesis_validators(mut self, validators: Vec<(String, PublicKey)>) -> Self {
        self.genesis_validators = validators;
        self
    }

    pub fn genesis_validators(&self) -> impl Iterator<Item = (&String, &PublicKey)> {
        self.genesis_validators
            .iter()
            .map(|(name, key)| (name, key))
    }

    /// The department that signs with `key` now.
    pub fn by_key(&self, key: &PublicKey) -> Option<&Department> {
        self.by_key.get(key.as_bytes())
    }

    pub fn by_name(&self, name: &str) -> Option<&Department> {
        self.by_name.get(name).and_then(|key| self.by_key.get(key))
    }

    /// In name order.
    pub fn iter(&self) -> impl Iterator<Item = &Department> {
        self.by_name.values().filter_map(|key| self.by_key.get(key))
    }

    /// The department whose signing key `key` was in the block at `height`:
    /// names the signer of a committed transaction, before or after the
    /// department changed its key.
    pub fn name_at(&self, key: &PublicKey, height: u64) -> Option<&str> {
        self.name_at_bytes(key.as_bytes(), height)
    }

    /// [`Departments::name_at`] for a key as its 32 bytes, which need not
    /// be a valid key (then no department has it): no point is
    /// decompressed, so listing a block's signers stays cheap.
    pub fn name_at_bytes(&self, key: &[u8; 32], height: u64) -> Option<&str> {
        if let Some(department) = self.by_key.get(key) {
            let since = self
                .history
                .get(&department.name)
                .map_or(1, |h| h.key_since_height);
            return (height >= since).then_some(department.name.as_str());
        }
        let name = self.former.get(key)?;
        self.history
            .get(name)?
            .former_keys
            .iter()
            .any(|k| k.signing_key == key && k.from_height <= height && height <= k.until_height)
            .then_some(name.as_str())
    }

    /// Whether any department signs or signed with `key`.
    pub fn key_ever_used(&self, key: &PublicKey) -> bool {
        self.by_key.contains_key(key.as_bytes()) || self.former.contains_key(key.as_bytes())
    }

    /// The departments as the state and `GetValidatorSet` hold them, in
    /// name order.
    pub fn to_registry(&self) -> DepartmentRegistry {
        DepartmentRegistry {
            departments: self.iter().map(|d| self.record(d)).collect(),
        }
    }

    fn record(&self, department: &Department) -> DepartmentRecord {
        let history = self.history.get(&department.name);
        DepartmentRecord {
            name: department.name.clone(),
            signing_key: department.public_key.as_bytes().to_vec(),
            key_since_height: history.map_or(1, |h| h.key_since_height),
            attests: department.attests.iter().cloned().collect(),
            node_key: department
                .node_key
                .map(|k| k.as_bytes().to_vec())
                .unwrap_or_default(),
            former_keys: history.map(|h| h.former_keys.clone()).unwrap_or_default(),
            member_since_height: history.map_or(1, |h| h.member_since_height),
            former_attests: history
                .map(|h| h.former_attests.clone())
                .unwrap_or_default(),
            former_node_keys: history
                .map(|h| h.former_node_keys.clone())
                .unwrap_or_default(),
        }
    }

    /// The departments a registry lists, keeping this one's genesis
    /// validators; or what in it is corrupt.
    pub fn from_registry(&self, registry: &DepartmentRegistry) -> Result<Self, String> {
        let key = |bytes: &[u8], what: &str, name: &str| {
            PublicKey::from_slice(bytes).map_err(|err| format!("department {name}: {what}: {err}"))
        };
        let mut departments = Self {
            genesis_validators: self.genesis_validators.clone(),
            ..Self::default()
        };
        for record in &registry.departments {
            let node_key = if record.node_key.is_empty() {
                None
            } else {
                Some(key(&record.node_key, "node key", &record.name)?)
            };
            departments.insert(Department {
                name: record.name.clone(),
                public_key: key(&record.signing_key, "signing key", &record.name)?,
                attests: record.attests.iter().cloned().collect(),
                node_key,
            });
            for former in &record.former_keys {
                let former_key = key(&former.signing_key, "former key", &record.name)?;
                departments
                    .former
                    .insert(*former_key.as_bytes(), record.name.clone());
            }
            departments.history.insert(
                record.name.clone(),
                History {
                    key_since_height: record.key_since_height,
                    member_since_height: record.member_since_height,
                    former_keys: record.former_keys.clone(),
                    former_attests: record.former_attests.clone(),
                    former_node_keys: record.former_node_keys.clone(),
                },
            );
        }
        Ok(departments)
    }

    /// Registers a department from `height`.
    pub(crate) fn register(
        &mut self,
        name: &str,
        key: PublicKey,
        attests: BTreeSet<String>,
        height: u64,
    ) {
        self.insert(Department {
            name: name.to_owned(),
            public_key: key,
            attests,
            node_key: None,
        });
        self.history.insert(
            name.to_owned(),
            History {
                key_since_height: height,
                member_since_height: height,
                ..History::default()
            },
        );
    }

    /// Gives department `name` the signing key `key` from `height`; the
    /// old key signed for it until `height - 1`. The caller checked that
    /// the department exists and that no department ever used `key`.
    pub(crate) fn replace_key(&mut self, name: &str, key: PublicKey, height: u64) {
        let Some(old) = self.by_name.get(name).copied() else {
            return;
        };
        let Some(mut department) = self.by_key.remove(&old) else {
            return;
        };
        let history = self.history.entry(name.to_owned()).or_default();
        history.former_keys.push(FormerSigningKey {
            signing_key: old.to_vec(),
            from_height: history.key_since_height,
            until_height: height - 1,
        });
        history.key_since_height = height;
        self.former.insert(old, name.to_owned());
        department.public_key = key;
        self.insert(department);
    }

    /// Replaces what department `name` may attest, from `height`.
    pub(crate) fn set_attests(&mut self, name: &str, attests: BTreeSet<String>, height: u64) {
        if let Some(key) = self.by_name.get(name)
            && let Some(department) = self.by_key.get_mut(key)
        {
            let former = std::mem::replace(&mut department.attests, attests);
            self.history
                .entry(name.to_owned())
                .or_default()
                .former_attests
                .push(FormerAttests {
                    names: former.into_iter().collect(),
                    until_height: height - 1,
                });
        }
    }

    /// Records the consensus key of department `name`'s node, from
    /// `height`.
    pub(crate) fn set_node_key(&mut self, name: &str, node_key: PublicKey, height: u64) {
        if let Some(key) = self.by_name.get(name)
            && let Some(department) = self.by_key.get_mut(key)
        {
            let former = department.node_key.replace(node_key);
            self.history
                .entry(name.to_owned())
                .or_default()
                .former_node_keys
                .push(FormerNodeKey {
                    node_key: former.map(|k| k.as_bytes().to_vec()).unwrap_or_default(),
                    until_height: height - 1,
                });
        }
    }

    /// Every signing key department `name` signs or signed with, current
    /// first.
    pub fn keys_of(&self, name: &str) -> Vec<PublicKey> {
        let Some(current) = self.by_name(name) else {
            return Vec::new();
        };
        let mut keys = vec![current.public_key];
        if let Some(history) = self.history.get(name) {
            keys.extend(
                history
                    .former_keys
                    .iter()
                    .filter_map(|k| PublicKey::from_slice(&k.signing_key).ok()),
            );
        }
        keys
    }

    /// The departments as they were in force for the block at `height`
    /// (their history is in these): members then, each with the signing
    /// key, attest permissions and node key it had then.
    pub fn as_of(&self, height: u64) -> Self {
        let mut then = Self {
            genesis_validators: self.genesis_validators.clone(),
            former: self.former.clone(),
            ..Self::default()
        };
        for department in self.iter() {
            let history = self
                .history
                .get(&department.name)
                .cloned()
                .unwrap_or_default();
            if history.member_since_height > height {
                continue;
            }
            let public_key = if history.key_since_height <= height {
                Some(department.public_key)
            } else {
                history
                    .former_keys
                    .iter()
                    .find(|k| k.from_height <= height && height <= k.until_height)
                    .and_then(|k| PublicKey::from_slice(&k.signing_key).ok())
            };
            let Some(public_key) = public_key else {
                continue;
            };
            let attests = history
                .former_attests
                .iter()
                .find(|a| height <= a.until_height)
                .map_or_else(
                    || department.attests.clone(),
                    |a| a.names.iter().cloned().collect(),
                );
            let node_key = history
                .former_node_keys
                .iter()
                .find(|k| height <= k.until_height)
                .map_or(department.node_key, |k| {
                    PublicKey::from_slice(&k.node_key).ok()
                });
            then.insert(Department {
                name: department.name.clone(),
                public_key,
                attests,
                node_key,
            });
            then.history.insert(department.name.clone(), history);
        }
        then
    }
}

#[cfg(test)]
mod tests {
    use govchain_crypto::SigningKey;

    use super::*;

    fn key(seed: u8) -> PublicKey {
        SigningKey::from_seed([seed; 32]).public_key()
    }

    fn genesis() -> Departments {
        Departments::new([Department {
            name: "tax".into(),
            public_key: key(1),
            attests: BTreeSet::from(["income".to_owned()]),
            node_key: Some(key(9)),
        }])
    }

    #[test]
    fn a_replaced_key_names_its_department_only_for_its_own_blocks() {
        let mut departments = genesis();
        departments.replace_key("tax", key(2), 10);
        assert!(departments.by_key(&key(1)).is_none());
        assert_eq!(
            departments.by_key(&key(2)).map(|d| d.name.as_str()),
            Some("tax")
        );
        assert_eq!(departments.name_at(&key(1), 9), Some("tax"));
        assert_eq!(departments.name_at(&key(1), 10), None);
        assert_eq!(departments.name_at(&key(2), 9), None);
        assert_eq!(departments.name_at(&key(2), 10), Some("tax"));
        assert!(departments.key_ever_used(&key(1)));
        assert!(!departments.key_ever_used(&key(3)));

        departments.replace_key("tax", key(3), 20);
        assert_eq!(departments.name_at(&key(2), 19), Some("tax"));
        assert_eq!(departments.name_at(&key(2), 20), None);
        assert_eq!(departments.name_at(&key(1), 5), Some("tax"));
        // By bytes, alike; bytes that are no valid key name nobody.
        assert_eq!(departments.name_at_bytes(key(1).as_bytes(), 5), Some("tax"));
        assert_eq!(departments.name_at_bytes(key(1).as_bytes(), 10), None);
        assert_eq!(
            departments.name_at_bytes(key(3).as_bytes(), 20),
            Some("tax")
        );
        assert_eq!(departments.name_at_bytes(&[0xff; 32], 20), None);
    }

    #[test]
    fn the_registry_round_trips() {
        let mut departments = genesis();
        departments.replace_key("tax", key(2), 10);
        departments.register("ports", key(4), BTreeSet::from(["vessel".into()]), 12);
        departments.set_attests("tax", BTreeSet::new(), 12);
        departments.set_node_key("ports", key(5), 13);
        let read = genesis()
            .from_registry(&departments.to_registry())
            .expect("a registry it wrote");
        assert_eq!(read, departments);
        assert_eq!(read.name_at(&key(4), 11), None);
        assert_eq!(read.name_at(&key(4), 12), Some("ports"));
        assert_eq!(read.by_name("ports").and_then(|d| d.node_key), Some(key(5)));
    }

    #[test]
    fn the_departments_at_a_height_follow_from_the_latest_history() {
        let mut departments = genesis();
        // From 10 tax signs with key 2; from 20 it attests residence; from
        // 30 its node key is 8; ports joins at 15.
        departments.replace_key("tax", key(2), 10);
        departments.set_attests("tax", BTreeSet::from(["residence".to_owned()]), 20);
        departments.set_node_key("tax", key(8), 30);
        departments.register("ports", key(4), BTreeSet::new(), 15);
        let departments = genesis()
            .from_registry(&departments.to_registry())
            .expect("a registry it wrote");

        let at = |height| departments.as_of(height);
        let tax = |height| at(height).by_name("tax").cloned().expect("tax");
        assert_eq!(tax(9).public_key, key(1));
        assert_eq!(tax(10).public_key, key(2));
        assert!(at(9).by_key(&key(2)).is_none());
        assert!(at(10).by_key(&key(1)).is_none());
        assert_eq!(tax(19).attests, BTreeSet::from(["income".to_owned()]));
        assert_eq!(tax(20).attests, BTreeSet::from(["residence".to_owned()]));
        assert_eq!(tax(29).node_key, Some(key(9)));
        assert_eq!(tax(30).node_key, Some(key(8)));
        assert!(at(14).by_name("ports").is_none());
        assert_eq!(at(15).by_name("ports").map(|d| d.public_key), Some(key(4)));
        assert_eq!(departments.keys_of("tax"), vec![key(2), key(1)]);
        // The latest height is the registry itself.
        assert_eq!(
            at(100).iter().collect::<Vec<_>>(),
            departments.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_corrupt_registry_is_refused() {
        let mut registry = genesis().to_registry();
        registry.departments[0].signing_key = vec![1, 2, 3];
        let err = genesis().from_registry(&registry).expect_err("3-byte key");
        assert!(err.contains("department tax: signing key"), "{err}");
    }

    #[test]
    fn department_names_follow_the_certificate_rule() {
        for good in ["tax", "a", "land-registry2", &"a".repeat(31)] {
            assert!(valid_department_name(good), "{good}");
        }
        for bad in [
            "",
            "Tax",
            "1tax",
            "-tax",
            "tax_office",
            "tax/x",
            &"a".repeat(32),
        ] {
            assert!(!valid_department_name(bad), "{bad}");
        }
    }
}
