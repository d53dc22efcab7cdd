//! `govchain tx follow`: committed transactions that match a filter, as
//! they commit, resuming after the last one printed when the connection
//! breaks.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use govchain_proto::node::v1::{
    ChainPosition, CommittedTransaction, SubscribeTransactionsRequest, TransactionFilter,
};
use serde::Serialize;
use tonic::Code;

use crate::client::{self, ConnectArgs, rpc_error};
use crate::envelope;
use crate::output::{self, format_time_ms};
use crate::view::{BodyView, ResultView};

/// Reconnections in a row without an event before the command gives up.
const RECONNECTS_MAX: u32 = 10;
/// The wait before the first reconnection; it doubles with each failed one.
const RECONNECT_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between reconnections.
const RECONNECT_WAIT_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Only transactions of this kind (repeatable): anchor_record,
    /// create_identity, declare_attribute, attest_attribute,
    /// revoke_attestation, grant_consent, revoke_consent, record_access,
    /// register_officer, revoke_officer, define_workflow, open_case,
    /// act_on_case, amend_case, publish_dataset_entry, dataset_version,
    /// request_dataset_access.
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// Only anchors in this dataset (repeatable); a name ending in "/" is a
    /// prefix: "health/".
    #[arg(long = "dataset", value_name = "DATASET")]
    datasets: Vec<String>,
    /// Only transactions signed with this genesis department's key
    /// (repeatable). (`--department` picks the certificate to connect with.)
    #[arg(long = "signed-by", value_name = "DEPARTMENT")]
    departments: Vec<String>,
    /// Only transactions of this signer, a public key in hex (repeatable).
    #[arg(long = "signer", value_name = "HEX")]
    signers: Vec<String>,
    /// Resume after this position, HEIGHT:INDEX, as printed with each
    /// transaction (the last one you processed).
    #[arg(long, value_name = "HEIGHT:INDEX", conflicts_with = "from", value_parser = parse_position)]
    after: Option<(u64, u32)>,
    /// First height to read; default: the next block to commit.
    #[arg(long, value_name = "HEIGHT", default_value_t = 0)]
    from: u64,
    /// Stop after this many transactions.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `HEIGHT:INDEX`.
fn parse_position(text: &str) -> Result<(u64, u32), String> {
    let (height, index) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not HEIGHT:INDEX, e.g. 120:3"))?;
    let height = height
        .parse()
        .map_err(|err| format!("height {height:?}: {err}"))?;
    let index = index
        .parse()
        .map_err(|err| format!("index {index:?}: {err}"))?;
    Ok((height, index))
}

/// One transaction, as printed (`--json`: one object per line).
#[derive(Debug, Serialize)]
pub(crate) struct EventLine {
    /// `HEIGHT:INDEX`, for `--after`.
    position: String,
    height: u64,
    index: u32,
    transaction_id: String,
    kind: String,
    department: String,
    signer: String,
    nonce: u64,
    time: String,
    result: Option<ResultView>,
    body: Option<BodyView>,
}

impl EventLine {
    pub(crate) fn new(event: &CommittedTransaction) -> Self {
        let position = event.position.unwrap_or_default();
        let envelope = event.envelope.clone().unwrap_or_default();
        Self {
            position: format!("{}:{}", position.height, position.index),
            height: position.height,
            index: position.index,
            transaction_id: hex::encode(&event.transaction_id),
            kind: event.kind.clone(),
            department: event.department.clone(),
            signer: hex::encode(&envelope.signer),
            nonce: envelope.nonce,
            time: format_time_ms(event.block_timestamp_ms),
            result: event.result.as_ref().map(ResultView::new),
            body: envelope::body(&envelope).map(|body| BodyView::new(&body)),
        }
    }

    pub(crate) fn text(&self) -> String {
        let who = if self.department.is_empty() {
            self.signer.get(..16).unwrap_or(&self.signer).to_owned()
        } else {
            self.department.clone()
        };
        let result = self
            .result
            .as_ref()
            .map_or("?".to_owned(), ResultView::text);
        format!(
            "{:<12} {} {:<18} {:<16} {}  {}",
            self.position,
            self.transaction_id
                .get(..16)
                .unwrap_or(&self.transaction_id),
            self.kind,
            who,
            self.time,
            result
        )
    }
}

pub async fn run(args: FollowArgs, json: bool) -> anyhow::Result<()> {
    let mut filter = TransactionFilter {
        kinds: args.kinds,
        datasets: args.datasets,
        departments: args.departments,
        signers: Vec::new(),
    };
    for signer in &args.signers {
        filter
            .signers
            .push(hex::decode(signer).with_context(|| format!("--signer {signer:?} is not hex"))?);
    }
    let target = args.connect.target()?;
    let mut after = args
        .after
        .map(|(height, index)| ChainPosition { height, index });
    let mut from = args.from;
    if after.is_none() && from == 0 {
        // "From the next block" fixed now, so that a reconnection before
        // the first transaction misses nothing committed meanwhile.
        let mut client = client::connect(&target).await?;
        let status = client
            .get_status(govchain_proto::node::v1::GetStatusRequest {})
            .await
            .map_err(rpc_error)?
            .into_inner();
        from = status.height + 1;
    }
    let mut printed = 0u64;
    let mut reconnects = 0u32;
    let mut connected_once = false;
    loop {
        let request = SubscribeTransactionsRequest {
            filter: Some(filter.clone()),
            after,
            from_height: from,
        };
        let stream = match client::connect(&target).await {
            Ok(mut client) => client
                .subscribe_transactions(request)
                .await
                .map(tonic::Response::into_inner),
            // The first connection failing is a setup error (address,
            // certificates): said at once. Later, the node may be restarting.
            Err(err) if !connected_once => return Err(err),
            Err(err) => Err(tonic::Status::unavailable(format!("{err:#}"))),
        };
        let broken = match stream {
            Ok(mut stream) => {
                connected_once = true;
                loop {
                    let message = tokio::select! {
                        message = stream.message() => message,
                        _ = tokio::signal::ctrl_c() => return Ok(()),
                    };
                    let event = match message {
                        Ok(Some(message)) => message
                            .transaction
                            .context("the node sent an event without its transaction")?,
                        Ok(None) => break None,
                        Err(status) => break Some(status),
                    };
                    reconnects = 0;
                    let line = EventLine::new(&event);
                    if json {
                        output::print_json_line(&line)?;
                    } else {
                        output::print(&line.text())?;
                    }
                    after = event.position;
                    printed += 1;
                    if args.limit.is_some_and(|limit| printed >= limit) {
                        return Ok(());
                    }
                }
            }
            Err(status) if !connected_once && !retryable(status.code()) => {
                return Err(rpc_error(status));
            }
            Err(status) => Some(status),
        };
        reconnects += 1;
        let retry = broken
            .as_ref()
            .is_none_or(|status| retryable(status.code()));
        if !retry || reconnects > RECONNECTS_MAX {
            return match broken {
                Some(status) => Err(rpc_error(status)),
                None => {
                    eprintln!("the node ended the stream");
                    Ok(())
                }
            };
        }
        let at = after.map_or("the start".to_owned(), |p| {
            format!("{}:{}", p.height, p.index)
        });
        let wait = reconnect_wait(reconnects);
        eprintln!(
            "the stream broke ({}); resuming after {at} in {} s (attempt {reconnects} of {RECONNECTS_MAX})",
            broken.map_or("ended".to_owned(), |s| client::status_line(&s)),
            wait.as_secs()
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Broken streams are resumed where they stopped, and a node out of
/// subscription places is asked again later; refusals are final.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::ResourceExhausted
            | Code::Aborted
    )
}

/// The wait before reconnection `attempt` (from 1): doubling from
/// [`RECONNECT_WAIT`] up to [`RECONNECT_WAIT_MAX`].
fn reconnect_wait(attempt: u32) -> Duration {
    RECONNECT_WAIT
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(RECONNECT_WAIT_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnections_back_off_to_a_cap() {
        let waits: Vec<u64> = (1..=8).map(|n| reconnect_wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(reconnect_wait(u32::MAX), RECONNECT_WAIT_MAX);
    }

    #[test]
    fn refusals_are_final_and_outages_are_retried() {
        assert!(retryable(Code::Unavailable));
        assert!(retryable(Code::ResourceExhausted));
        assert!(!retryable(Code::InvalidArgument));
        assert!(!retryable(Code::PermissionDenied));
        assert!(!retryable(Code::Unauthenticated));
    }

    #[test]
    fn positions_parse_as_height_colon_index() {
        assert_eq!(parse_position("120:3"), Ok((120, 3)));
        assert!(
            parse_position("120")
                .expect_err("no colon")
                .contains("HEIGHT:INDEX")
        );
        assert!(
            parse_position("a:1")
                .expect_err("no height")
                .contains("height")
        );
        assert!(
            parse_position("1:-1")
                .expect_err("no index")
                .contains("index")
        );
    }
}
