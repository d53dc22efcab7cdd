//! `SubscribeTransactions`: committed transactions that match a filter,
//! in chain order, each with its position, so that a client resumes after
//! the last one it processed with no gap and no duplicate.
//!
//! [`Filter`] is the checked form of the request's filter; [`events`] lists
//! the matching transactions of one committed block from a position on.

use std::collections::BTreeSet;

use govchain_crypto::PublicKey;
use govchain_exec::{Departments, TRANSACTION_KINDS, body_kind};
use govchain_proto::node::v1::{ChainPosition, CommittedTransaction, TransactionFilter};
use govchain_proto::types::v1::{CommittedBlock, Transaction, transaction::Body};
use prost::Message as _;
use tonic::Status;

use crate::errors;

/// Entries one filter list may hold: a filter is a selection, not a
/// directory.
pub const FILTER_ENTRIES_MAX: usize = 256;

/// A request's filter, checked: every non-empty set must match.
#[derive(Debug, Default)]
pub struct Filter {
    kinds: BTreeSet<&'static str>,
    datasets: Vec<String>,
    departments: BTreeSet<String>,
    signers: BTreeSet<[u8; 32]>,
}

impl Filter {
    /// Checks `filter`: known kinds, well-formed signers, bounded lists.
    pub fn new(filter: TransactionFilter) -> Result<Self, Status> {
        for (field, len) in [
            ("filter.kinds", filter.kinds.len()),
            ("filter.datasets", filter.datasets.len()),
            ("filter.departments", filter.departments.len()),
            ("filter.signers", filter.signers.len()),
        ] {
            if len > FILTER_ENTRIES_MAX {
                return Err(errors::invalid_field(
                    field,
                    format!("{len} entries; at most {FILTER_ENTRIES_MAX} (FILTER_ENTRIES_MAX)"),
                ));
            }
        }
        let mut kinds = BTreeSet::new();
        for (i, kind) in filter.kinds.iter().enumerate() {
            let Some(known) = TRANSACTION_KINDS.iter().find(|k| **k == kind.as_str()) else {
                return Err(errors::invalid_field(
                    &format!("filter.kinds[{i}]"),
                    format!(
                        "unknown kind {}; the kinds are {}",
                        crate::errors::echo(kind),
                        TRANSACTION_KINDS.join(", ")
                    ),
                ));
            };
            kinds.insert(*known);
        }
        let mut signers = BTreeSet::new();
        for (i, signer) in filter.signers.iter().enumerate() {
            let key = PublicKey::from_slice(signer).map_err(|err| {
                errors::invalid_field(&format!("filter.signers[{i}]"), err.to_string())
            })?;
            signers.insert(*key.as_bytes());
        }
        Ok(Self {
            kinds,
            datasets: filter.datasets,
            departments: filter.departments.into_iter().collect(),
            signers,
        })
    }

    /// Whether a transaction of `body`, signed by `signer` (a department's
    /// key when `department` is set), matches.
    fn matches(&self, body: &Body, signer: &[u8], department: &str) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(body_kind(body)) {
            return false;
        }
        if !self.departments.is_empty() && !self.departments.contains(department) {
            return false;
        }
        if !self.signers.is_empty()
            && !<[u8; 32]>::try_from(signer).is_ok_and(|key| self.signers.contains(&key))
        {
            return false;
        }
        if !self.datasets.is_empty() {
            let Body::AnchorRecord(anchor) = body else {
                return false;
            };
            let wanted = |dataset: &String| {
                if dataset.ends_with('/') {
                    anchor.dataset.starts_with(dataset.as_str())
                } else {
                    anchor.dataset == *dataset
                }
            };
            if !self.datasets.iter().any(wanted) {
                return false;
            }
        }
        true
    }
}

/// The transactions of `block` from entry `first` on that match `filter`,
/// as events, in order.
pub fn events(
    block: &CommittedBlock,
    first: u32,
    filter: &Filter,
    departments: &Departments,
) -> Vec<CommittedTransaction> {
    let header = block.header.clone().unwrap_or_default();
    let Some(body) = &block.block else {
        return Vec::new();
    };
    let mut events = Vec::new();
    for (index, envelope) in body.transactions.iter().enumerate().skip(first as usize) {
        // A committed transaction decodes: execution checked it.
        let Some(kind_body) = Transaction::decode(envelope.payload.as_ref())
            .ok()
            .and_then(|t| t.body)
        else {
            continue;
        };
        let department = PublicKey::from_slice(&envelope.signer)
            .ok()
            .and_then(|key| departments.name_at(&key, header.height).map(str::to_owned))
            .unwrap_or_default();
        if !filter.matches(&kind_body, &envelope.signer, &department) {
            continue;
        }
        let index = index as u32;
        let transaction_id = govchain_exec::transaction_id(
            &envelope.chain_id,
            &envelope.signer,
            envelope.nonce,
            &envelope.payload,
        );
        events.push(CommittedTransaction {
            position: Some(ChainPosition {
                height: header.height,
                index,
            }),
            transaction_id: transaction_id.to_vec(),
            block_hash: block.block_hash.clone(),
            block_timestamp_ms: header.timestamp_ms,
            kind: body_kind(&kind_body).to_owned(),
            department,
            envelope: Some(envelope.clone()),
            result: block.results.get(index as usize).cloned(),
        });
    }
    events
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use govchain_crypto::SigningKey;
    use govchain_exec::Department;
    use govchain_proto::types::v1::{
        AnchorRecord, Block, BlockHeader, GrantConsent, TransactionEnvelope,
    };

    use super::*;

    fn envelope(key: &SigningKey, body: Body) -> TransactionEnvelope {
        TransactionEnvelope {
            payload: Transaction { body: Some(body) }.encode_to_vec().into(),
            signer: key.public_key().as_bytes().to_vec(),
            chain_id: "c".into(),
            nonce: 1,
            ..Default::default()
        }
    }

    fn anchor(dataset: &str) -> Body {
        Body::AnchorRecord(AnchorRecord {
            dataset: dataset.into(),
            ..Default::default()
        })
    }

    fn block(transactions: Vec<TransactionEnvelope>) -> CommittedBlock {
        CommittedBlock {
            header: Some(BlockHeader {
                height: 7,
                ..Default::default()
            }),
            block: Some(Block {
                transactions,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn positions(events: &[CommittedTransaction]) -> Vec<(u64, u32)> {
        events
            .iter()
            .map(|e| {
                let p = e.position.unwrap();
                (p.height, p.index)
            })
            .collect()
    }

    #[test]
    fn filters_select_by_kind_dataset_department_and_signer_from_a_position() {
        let health = SigningKey::from_seed([1; 32]);
        let citizen = SigningKey::from_seed([2; 32]);
        let departments = Departments::new([Department {
            name: "health".into(),
            public_key: health.public_key(),
            attests: Default::default(),
            node_key: None,
        }]);
        let block = block(vec![
            envelope(&health, anchor("health/vaccinations")),
            envelope(&citizen, Body::GrantConsent(GrantConsent::default())),
            envelope(&health, anchor("health/visits")),
            envelope(&citizen, anchor("tax/returns")),
        ]);
        let all = Filter::new(TransactionFilter::default()).unwrap();
        let every = events(&block, 0, &all, &departments);
        assert_eq!(positions(&every), [(7, 0), (7, 1), (7, 2), (7, 3)]);
        assert_eq!(every[0].department, "health");
        assert_eq!(every[1].kind, "grant_consent");
        assert_eq!(every[1].department, "");
        // Resuming after (7, 1).
        assert_eq!(
            positions(&events(&block, 2, &all, &departments)),
            [(7, 2), (7, 3)]
        );

        let prefix = Filter::new(TransactionFilter {
            datasets: vec!["health/".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            positions(&events(&block, 0, &prefix, &departments)),
            [(7, 0), (7, 2)]
        );
        let exact = Filter::new(TransactionFilter {
            datasets: vec!["health/visits".into()],
            departments: vec!["health".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            positions(&events(&block, 0, &exact, &departments)),
            [(7, 2)]
        );
        let by_signer = Filter::new(TransactionFilter {
            kinds: vec!["anchor_record".into()],
            signers: vec![citizen.public_key().as_bytes().to_vec()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            positions(&events(&block, 0, &by_signer, &departments)),
            [(7, 3)]
        );
    }

    #[test]
    fn a_bad_filter_names_its_field() {
        let unknown = Filter::new(TransactionFilter {
            kinds: vec!["anchor_record".into(), "mint_coins".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
        assert!(
            unknown.message().contains("unknown kind \"mint_coins\""),
            "{unknown:?}"
        );
        let short = Filter::new(TransactionFilter {
            signers: vec![vec![1, 2, 3]],
            ..Default::default()
        })
        .unwrap_err();
        use tonic_types::StatusExt as _;
        assert_eq!(
            short
                .get_error_details()
                .bad_request()
                .unwrap()
                .field_violations[0]
                .field,
            "filter.signers[0]"
        );
        let long = Filter::new(TransactionFilter {
            datasets: vec![String::new(); FILTER_ENTRIES_MAX + 1],
            ..Default::default()
        })
        .unwrap_err();
        assert!(long.message().contains("FILTER_ENTRIES_MAX"), "{long:?}");
    }
}
