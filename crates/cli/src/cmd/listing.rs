//! `govchain record history|list` and `govchain tx list`: the node's
//! listings (`ListAnchors`, `ListTransactions`), one page or all of them.

use anyhow::Context as _;
use clap::Args;
use govchain_crypto::SigningKey;
use govchain_proto::node::v1::{CommittedTransaction, ListAnchorsRequest, ListTransactionsRequest};
use serde::Serialize;

use crate::client::{self, ConnectArgs, rpc_error};
use crate::cmd::tx_follow::EventLine;
use crate::output;

/// Pages a listing command reads at most with `--all`: a bound, so that a
/// mistyped filter over a long chain stops by itself.
const PAGES_MAX: usize = 10_000;

/// `--page-size`, `--page-token`, `--all`.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Entries per page (at most 1,000; default 100).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    page_size: u32,
    /// The next_page_token a previous page printed.
    #[arg(
        long,
        value_name = "TOKEN",
        default_value = "",
        hide_default_value = true
    )]
    page_token: String,
    /// Read every page, not just one.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The record's dataset, e.g. health/reports.
    dataset: String,
    /// The record's id within the dataset.
    record_id: String,
    #[command(flatten)]
    page: PageArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("selector").required(true).multiple(false))]
pub struct ListArgs {
    /// Anchors in this dataset.
    #[arg(long, group = "selector", value_name = "DATASET")]
    dataset: Option<String>,
    /// Anchors signed with this genesis department's key.
    #[arg(long = "signed-by", group = "selector", value_name = "DEPARTMENT")]
    signed_by: Option<String>,
    /// Anchors in blocks from this time on (RFC 3339, e.g.
    /// 2026-12-01T00:00:00Z, or Unix ms).
    #[arg(long, group = "selector", value_name = "TIME", value_parser = parse_time)]
    since: Option<u64>,
    /// With --since: only blocks before this time.
    #[arg(long, requires = "since", value_name = "TIME", value_parser = parse_time)]
    until: Option<u64>,
    #[command(flatten)]
    page: PageArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("who").required(true).multiple(false))]
pub struct TxListArgs {
    /// The signer's public key, in hex.
    #[arg(long, group = "who", value_name = "HEX")]
    signer: Option<String>,
    /// The signer's key file (PKCS#8 PEM); only its public key is used.
    #[arg(long, group = "who", value_name = "FILE")]
    signing_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    page: PageArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// A time as RFC 3339 or Unix ms.
fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|err| {
        format!("{text:?} is neither RFC 3339 (2026-12-01T00:00:00Z) nor Unix ms: {err}")
    })?;
    let ms = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{text:?} is before 1970"))?
        .as_millis();
    u64::try_from(ms).map_err(|_| format!("{text:?} is too far ahead"))
}

/// What a listing printed: the entries and where to go on.
#[derive(Debug, Serialize)]
struct Page {
    entries: Vec<EventLine>,
    /// Empty after the last page.
    next_page_token: String,
}

/// Reads one page (or, with `--all`, every page) with `fetch`, which gets
/// a page token and returns the entries and the next token.
async fn pages<F, Fut>(page: &PageArgs, json: bool, mut fetch: F) -> anyhow::Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Vec<CommittedTransaction>, String)>>,
{
    let mut token = page.page_token.clone();
    let mut all = Page {
        entries: Vec::new(),
        next_page_token: String::new(),
    };
    for _ in 0..PAGES_MAX {
        let (entries, next) = fetch(token).await?;
        let lines: Vec<EventLine> = entries.iter().map(EventLine::new).collect();
        if !json {
            for line in &lines {
                output::print(&line.text())?;
            }
        }
        all.entries.extend(lines);
        all.next_page_token.clone_from(&next);
        if !page.all || next.is_empty() {
            break;
        }
        token = next;
    }
    if json {
        output::print_json(&all)?;
    } else if !all.next_page_token.is_empty() {
        eprintln!("more: --page-token {} (or --all)", all.next_page_token);
    }
    Ok(())
}

pub async fn history(args: HistoryArgs, json: bool) -> anyhow::Result<()> {
    let target = args.connect.target()?;
    let client = client::connect(&target).await?;
    let page_size = args.page.page_size;
    pages(&args.page, json, |page_token| {
        let mut client = client.clone();
        let request = ListAnchorsRequest {
            dataset: args.dataset.clone(),
            record_id: args.record_id.clone(),
            page_size,
            page_token,
            ..Default::default()
        };
        async move {
            let response = client
                .list_anchors(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            Ok((response.anchors, response.next_page_token))
        }
    })
    .await
}

pub async fn list(args: ListArgs, json: bool) -> anyhow::Result<()> {
    let target = args.connect.target()?;
    let client = client::connect(&target).await?;
    let base = ListAnchorsRequest {
        dataset: args.dataset.unwrap_or_default(),
        department: args.signed_by.unwrap_or_default(),
        from_time_ms: args.since.unwrap_or_default(),
        to_time_ms: args.until.unwrap_or_default(),
        page_size: args.page.page_size,
        ..Default::default()
    };
    pages(&args.page, json, |page_token| {
        let mut client = client.clone();
        let request = ListAnchorsRequest {
            page_token,
            ..base.clone()
        };
        async move {
            let response = client
                .list_anchors(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            Ok((response.anchors, response.next_page_token))
        }
    })
    .await
}

pub async fn transactions(args: TxListArgs, json: bool) -> anyhow::Result<()> {
    let signer = match (&args.signer, &args.signing_key) {
        (Some(hex), _) => {
            hex::decode(hex).with_context(|| format!("--signer {hex:?} is not hex"))?
        }
        (None, Some(path)) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the key file {}", path.display()))?;
            let key = SigningKey::from_pkcs8_pem(&pem)
                .with_context(|| format!("{} is not a PKCS#8 Ed25519 key", path.display()))?;
            key.public_key().as_bytes().to_vec()
        }
        (None, None) => anyhow::bail!("name the signer: --signer HEX or --signing-key FILE"),
    };
    let target = args.connect.target()?;
    let client = client::connect(&target).await?;
    let page_size = args.page.page_size;
    pages(&args.page, json, |page_token| {
        let mut client = client.clone();
        let request = ListTransactionsRequest {
            signer: signer.clone(),
            page_size,
            page_token,
        };
        async move {
            let response = client
                .list_transactions(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            Ok((response.transactions, response.next_page_token))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_unix_ms() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2026-12-01T00:00:00Z"), Ok(1_796_083_200_000));
        assert!(
            parse_time("yesterday")
                .expect_err("not a time")
                .contains("RFC 3339")
        );
    }
}
