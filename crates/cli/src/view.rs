//! JSON shapes of API messages: bytes as hex, enums as lower-case words,
//! times as both Unix ms and RFC 3339. These are the `--json` output format.

use govchain_proto::node::v1::TransactionStatus;
use govchain_proto::types::v1::{
    AnchorRecord, TransactionOutcome, TransactionResult, transaction::Body,
};
use serde::Serialize;

use crate::output::format_time_ms;

/// `success`, `failed`, or `unspecified`.
pub fn outcome_name(outcome: TransactionOutcome) -> &'static str {
    match outcome {
        TransactionOutcome::Success => "success",
        TransactionOutcome::Failed => "failed",
        TransactionOutcome::Unspecified => "unspecified",
    }
}

/// `pending`, `committed`, or `unspecified`.
pub fn status_name(status: TransactionStatus) -> &'static str {
    match status {
        TransactionStatus::Pending => "pending",
        TransactionStatus::Committed => "committed",
        TransactionStatus::Unspecified => "unspecified",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultView {
    pub outcome: &'static str,
    /// Why the transaction failed; empty on success.
    pub error: String,
}

impl ResultView {
    pub fn new(result: &TransactionResult) -> Self {
        Self {
            outcome: outcome_name(result.outcome()),
            error: result.error.clone(),
        }
    }

    pub fn failed(&self) -> bool {
        self.outcome == "failed"
    }

    /// `success`, or `failed: <why>`.
    pub fn text(&self) -> String {
        if self.error.is_empty() {
            self.outcome.to_owned()
        } else {
            format!("{}: {}", self.outcome, self.error)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorView {
    pub dataset: String,
    pub record_id: String,
    pub record_hash: String,
    pub schema: String,
    pub record_time_ms: u64,
    pub record_time: String,
}

impl AnchorView {
    pub fn new(record: &AnchorRecord) -> Self {
        Self {
            dataset: record.dataset.clone(),
            record_id: record.record_id.clone(),
            record_hash: hex::encode(&record.record_hash),
            schema: record.schema.clone(),
            record_time_ms: record.record_time_ms,
            record_time: format_time_ms(record.record_time_ms),
        }
    }
}

/// A transaction body, tagged by kind: `{"anchor_record": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyView {
    AnchorRecord(AnchorView),
}

impl BodyView {
    pub fn new(body: &Body) -> Self {
        match body {
            Body::AnchorRecord(record) => Self::AnchorRecord(AnchorView::new(record)),
        }
    }

    /// `key: value` pairs for human output.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::AnchorRecord(anchor) => vec![
                ("kind", "anchor record".to_owned()),
                ("dataset", anchor.dataset.clone()),
                ("record id", anchor.record_id.clone()),
                ("record sha256", anchor.record_hash.clone()),
                ("schema", or_dash(&anchor.schema)),
                ("record time", anchor.record_time.clone()),
            ],
        }
    }
}

pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_read_naturally() {
        let ok = ResultView::new(&TransactionResult {
            outcome: TransactionOutcome::Success.into(),
            error: String::new(),
        });
        assert_eq!(ok.text(), "success");
        assert!(!ok.failed());
        let failed = ResultView::new(&TransactionResult {
            outcome: TransactionOutcome::Failed.into(),
            error: "record is owned by tax".into(),
        });
        assert_eq!(failed.text(), "failed: record is owned by tax");
        assert!(failed.failed());
    }

    #[test]
    fn bodies_serialize_tagged_by_kind() {
        let body = Body::AnchorRecord(AnchorRecord {
            dataset: "d".into(),
            record_id: "r".into(),
            record_hash: vec![0xab; 32],
            schema: String::new(),
            record_time_ms: 0,
        });
        let json = serde_json::to_value(BodyView::new(&body)).expect("json");
        assert_eq!(json["anchor_record"]["record_hash"], "ab".repeat(32));
        assert_eq!(
            json["anchor_record"]["record_time"],
            "1970-01-01T00:00:00.000Z"
        );
    }
}
