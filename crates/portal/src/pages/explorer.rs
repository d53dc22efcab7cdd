//! The block explorer: the chain's status, the validators and whether they
//! sign, the latest blocks with their commit certificates, a block, a
//! transaction, anchors by dataset, and a search box. Pages are plain HTML;
//! `GET /explorer/events` streams the status so that the overview updates
//! live.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use govchain_proto::node::v1::{
    GetBlockRequest, GetStatusRequest, GetStatusResponse, GetTransactionRequest,
    GetValidatorSetRequest, ListAnchorsRequest, get_block_request,
};
use govchain_proto::types::v1::{CommittedBlock, Transaction, TransactionEnvelope};
use maud::{Markup, html};
use prost::Message as _;
use serde::Deserialize;

use super::{ErrorPage, Frame, format_time, layout, short_hex};
use crate::AppState;

/// Blocks on the overview.
pub const LATEST_BLOCKS: u64 = 10;
/// How often the live status is sent, and for how long one stream lasts
/// (the browser reconnects by itself).
pub const STATUS_EVENT_INTERVAL: Duration = Duration::from_secs(1);
pub const STATUS_STREAM_DURATION: Duration = Duration::from_secs(300);
/// Anchors on one page of a dataset's list.
pub const ANCHORS_PER_PAGE: u32 = 50;

fn frame<'a>(
    portal: &'a crate::Portal,
    session: Option<&'a crate::sessions::Session>,
) -> Frame<'a> {
    Frame {
        department: &portal.config.department,
        session,
    }
}

async fn status(portal: &crate::Portal) -> Result<GetStatusResponse, ErrorPage> {
    portal
        .node
        .node()
        .get_status(GetStatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| ErrorPage::from_status(&portal.config.department, &status))
}

async fn block_at(portal: &crate::Portal, height: u64) -> Result<CommittedBlock, ErrorPage> {
    portal
        .node
        .node()
        .get_block(GetBlockRequest {
            selector: Some(get_block_request::Selector::Height(height)),
        })
        .await
        .map_err(|status| ErrorPage::from_status(&portal.config.department, &status))?
        .into_inner()
        .block
        .ok_or_else(|| {
            ErrorPage::new(
                StatusCode::BAD_GATEWAY,
                &portal.config.department,
                "the node answered without a block",
            )
        })
}

/// The latest blocks, newest first.
async fn latest_blocks(
    portal: &crate::Portal,
    height: u64,
) -> Result<Vec<CommittedBlock>, ErrorPage> {
    let mut blocks = Vec::new();
    let oldest = height.saturating_sub(LATEST_BLOCKS - 1).max(1);
    for at in (oldest..=height).rev() {
        blocks.push(block_at(portal, at).await?);
    }
    Ok(blocks)
}

/// The validators in force (index, department), as the node's governance
/// state has them.
async fn validators(portal: &crate::Portal) -> Result<Vec<(u32, String)>, ErrorPage> {
    let set = portal
        .node
        .node()
        .get_validator_set(GetValidatorSetRequest::default())
        .await
        .map_err(|status| ErrorPage::from_status(&portal.config.department, &status))?
        .into_inner();
    Ok(set
        .validators
        .unwrap_or_default()
        .members
        .into_iter()
        .map(|member| (member.index, member.department))
        .collect())
}

/// A validator's name by its index: in the set in force, else in genesis (a
/// validator removed since signed older blocks).
fn validator_name(portal: &crate::Portal, members: &[(u32, String)], index: u32) -> String {
    members
        .iter()
        .find(|(at, _)| *at == index)
        .map(|(_, name)| name.clone())
        .or_else(|| portal.config.validators.get(index as usize).cloned())
        .unwrap_or_else(|| format!("validator {index}"))
}

pub async fn overview(
    State(portal): State<AppState>,
    headers: HeaderMap,
) -> Result<Html<String>, ErrorPage> {
    let status = status(&portal).await?;
    let blocks = latest_blocks(&portal, status.height).await?;
    let members = validators(&portal).await?;
    let signers: BTreeSet<u32> = blocks
        .iter()
        .filter_map(|block| block.certificate.as_ref())
        .flat_map(|certificate| certificate.signatures.iter().map(|s| s.validator_index))
        .collect();
    let session = portal.sessions.get(&headers);
    let page = layout(
        &frame(&portal, session.as_ref()),
        "Chain explorer",
        html! {
            (search_form(""))
            section aria-labelledby="status-heading" data-live-status="/explorer/events" {
                h2 id="status-heading" { "Status" }
                dl class="summary" {
                    dt { "Chain" } dd { code { (status.chain_id) } }
                    dt { "Height" } dd id="status-height" { (status.height) }
                    dt { "View" } dd id="status-view" { (status.view) }
                    dt { "Primary" } dd id="status-primary" { (status.primary) }
                    dt { "Latest block at" } dd id="status-time" { (format_time(status.head_timestamp_ms)) }
                    dt { "Transactions waiting" } dd id="status-mempool" { (status.mempool_transactions) }
                }
            }
            section aria-labelledby="validators-heading" {
                h2 id="validators-heading" { "Validators" }
                p { "A validator is live when it signed a commit certificate of the latest " (LATEST_BLOCKS) " blocks." }
                table id="validators-table" {
                    thead { tr { th scope="col" { "Validator" } th scope="col" { "Signing" } th scope="col" { "Connected to this node" } } }
                    tbody {
                        @for (index, name) in &members {
                            @let connected = *name == status.node || status.connected_peers.contains(name);
                            tr {
                                th scope="row" { (name) @if *name == status.primary { " (primary)" } }
                                td { @if signers.contains(index) { span class="tag ok" { "Live" } } @else { span class="tag bad" { "Not signing" } } }
                                td { @if connected { "Yes" } @else { "No" } }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="blocks-heading" {
                h2 id="blocks-heading" { "Latest blocks" }
                div id="latest-blocks" data-refresh="/explorer/latest" { (blocks_table(&portal, &members, &blocks)) }
            }
        },
    );
    Ok(Html(page.into_string()))
}

/// `GET /explorer/latest`: the latest blocks' table alone, which the
/// overview's script swaps in when the height changes.
pub async fn latest_fragment(State(portal): State<AppState>) -> Result<Html<String>, ErrorPage> {
    let status = status(&portal).await?;
    let blocks = latest_blocks(&portal, status.height).await?;
    let members = validators(&portal).await?;
    Ok(Html(blocks_table(&portal, &members, &blocks).into_string()))
}

fn blocks_table(
    portal: &crate::Portal,
    members: &[(u32, String)],
    blocks: &[CommittedBlock],
) -> Markup {
    html! {
        @if blocks.is_empty() {
            p { "No block is committed yet." }
        } @else {
            table id="blocks-table" {
                thead { tr { th scope="col" { "Height" } th scope="col" { "Time" } th scope="col" { "Transactions" } th scope="col" { "Proposer" } th scope="col" { "Signatures" } th scope="col" { "Hash" } } }
                tbody {
                    @for block in blocks {
                        @let header = block.header.clone().unwrap_or_default();
                        @let signatures = block.certificate.as_ref().map_or(0, |c| c.signatures.len());
                        tr {
                            th scope="row" { a href={ "/explorer/block/" (header.height) } { (header.height) } }
                            td { (format_time(header.timestamp_ms)) }
                            td { (header.transaction_count) }
                            td { (validator_name(portal, members, header.proposer_index)) }
                            td { (signatures) }
                            td { (short_hex(&block.block_hash)) }
                        }
                    }
                }
            }
        }
    }
}

fn search_form(value: &str) -> Markup {
    html! {
        form method="get" action="/explorer/search" role="search" class="search" {
            label for="search-input" { "Search by block height, transaction id or dataset" }
            div class="search-row" {
                input id="search-input" name="q" type="search" value=(value) autocomplete="off" spellcheck="false";
                button type="submit" class="button" { "Search" }
            }
        }
    }
}

/// `GET /explorer/events`: the status as JSON every second, for five
/// minutes (then the browser's EventSource reconnects).
pub async fn events(
    State(portal): State<AppState>,
) -> Sse<tokio_stream::wrappers::ReceiverStream<Result<Event, Infallible>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let end = tokio::time::Instant::now() + STATUS_STREAM_DURATION;
        let mut ticks = tokio::time::interval(STATUS_EVENT_INTERVAL);
        while tokio::time::Instant::now() < end {
            ticks.tick().await;
            let Ok(status) = status(&portal).await else {
                continue;
            };
            let json = serde_json::json!({
                "height": status.height,
                "view": status.view,
                "primary": status.primary,
                "time": format_time(status.head_timestamp_ms),
                "mempool": status.mempool_transactions,
            });
            let event = Event::default().event("status").data(json.to_string());
            if sender.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

pub async fn block(
    State(portal): State<AppState>,
    Path(height): Path<String>,
    headers: HeaderMap,
) -> Result<Html<String>, ErrorPage> {
    let department = &portal.config.department;
    let height: u64 = height.parse().map_err(|_| {
        ErrorPage::new(
            StatusCode::BAD_REQUEST,
            department,
            "a block height is a whole number",
        )
    })?;
    let block = block_at(&portal, height).await?;
    let members = validators(&portal).await?;
    let header = block.header.clone().unwrap_or_default();
    let envelopes = block
        .block
        .as_ref()
        .map_or(&[][..], |b| &b.transactions[..]);
    let session = portal.sessions.get(&headers);
    let page = layout(
        &frame(&portal, session.as_ref()),
        &format!("Block {height}"),
        html! {
            (search_form(""))
            dl class="summary" {
                dt { "Hash" } dd { code class="wrap" { (hex::encode(&block.block_hash)) } }
                dt { "Parent" } dd {
                    @if height > 1 { a href={ "/explorer/block/" (height - 1) } { code class="wrap" { (hex::encode(&header.parent_hash)) } } }
                    @else { code class="wrap" { (hex::encode(&header.parent_hash)) } }
                }
                dt { "Time" } dd { (format_time(header.timestamp_ms)) }
                dt { "View" } dd { (header.view) }
                dt { "Proposer" } dd { (validator_name(&portal, &members, header.proposer_index)) }
                dt { "State root" } dd { code class="wrap" { (hex::encode(&header.state_root)) } }
                dt { "Transactions root" } dd { code class="wrap" { (hex::encode(&header.transactions_root)) } }
            }
            h2 { "Commit certificate" }
            @if let Some(certificate) = &block.certificate {
                p { "Signed in view " (certificate.view) " by " (certificate.signatures.len()) " validators:" }
                ul id="certificate-signers" {
                    @for signature in &certificate.signatures {
                        li { (validator_name(&portal, &members, signature.validator_index)) " " (short_hex(&signature.signature)) }
                    }
                }
            } @else {
                p { "This block has no certificate." }
            }
            h2 { "Transactions" }
            (transactions_table(&block, envelopes))
        },
    );
    Ok(Html(page.into_string()))
}

/// A transaction's id and kind, from its envelope.
fn describe(envelope: &TransactionEnvelope) -> (String, &'static str) {
    let id = govchain_exec::transaction_id(
        &envelope.chain_id,
        &envelope.signer,
        envelope.nonce,
        &envelope.payload,
    );
    let kind = Transaction::decode(&envelope.payload[..])
        .ok()
        .and_then(|transaction| transaction.body)
        .map_or("unknown", |body| govchain_exec::body_kind(&body));
    (id.to_hex(), kind)
}

fn transactions_table(block: &CommittedBlock, envelopes: &[TransactionEnvelope]) -> Markup {
    html! {
        @if envelopes.is_empty() {
            p { "This block holds no transactions." }
        } @else {
            table id="transactions-table" {
                thead { tr { th scope="col" { "#" } th scope="col" { "Transaction" } th scope="col" { "Kind" } th scope="col" { "Outcome" } } }
                tbody {
                    @for (index, envelope) in envelopes.iter().enumerate() {
                        @let (id, kind) = describe(envelope);
                        @let outcome = block.results.get(index).map_or(0, |r| r.outcome);
                        tr {
                            td { (index) }
                            th scope="row" { a href={ "/explorer/tx/" (id) } { code { (&id[..16]) "…" } } }
                            td { (kind) }
                            td { (outcome_tag(outcome)) }
                        }
                    }
                }
            }
        }
    }
}

fn outcome_tag(outcome: i32) -> Markup {
    use govchain_proto::types::v1::TransactionOutcome;
    html! {
        @match TransactionOutcome::try_from(outcome) {
            Ok(TransactionOutcome::Success) => span class="tag ok" { "Committed" },
            Ok(TransactionOutcome::Failed) => span class="tag bad" { "Failed" },
            _ => span class="tag" { "Unknown" },
        }
    }
}

pub async fn transaction(
    State(portal): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Html<String>, ErrorPage> {
    let department = &portal.config.department;
    let digest = govchain_crypto::Digest::from_hex(&id).map_err(|_| {
        ErrorPage::new(
            StatusCode::BAD_REQUEST,
            department,
            "a transaction id is 64 hex characters",
        )
    })?;
    let found = portal
        .node
        .node()
        .get_transaction(GetTransactionRequest {
            transaction_id: digest.to_vec(),
            prove: false,
        })
        .await
        .map_err(|status| ErrorPage::from_status(department, &status))?
        .into_inner();
    let kind = found.envelope.as_ref().map_or("–", |e| describe(e).1);
    let result = found.result.clone().unwrap_or_default();
    let session = portal.sessions.get(&headers);
    let page = layout(
        &frame(&portal, session.as_ref()),
        "Transaction",
        html! {
            (search_form(""))
            dl class="summary" {
                dt { "Id" } dd { code class="wrap" id="transaction-id" { (digest.to_hex()) } }
                dt { "Status" } dd id="transaction-status" { (status_text(found.status)) }
                @if found.block_height > 0 {
                    dt { "Block" } dd { a href={ "/explorer/block/" (found.block_height) } { (found.block_height) } " (position " (found.index) ")" }
                    dt { "Outcome" } dd { (outcome_tag(result.outcome)) @if !result.error.is_empty() { " " (result.error) } }
                }
                dt { "Kind" } dd { (kind) }
                @if let Some(envelope) = &found.envelope {
                    dt { "Signer" } dd { code class="wrap" { (hex::encode(&envelope.signer)) } }
                    dt { "Nonce" } dd { (envelope.nonce) }
                }
                @if !found.drop_reason.is_empty() {
                    dt { "Dropped" } dd { (found.drop_reason) }
                }
            }
        },
    );
    Ok(Html(page.into_string()))
}

fn status_text(status: i32) -> &'static str {
    use govchain_proto::node::v1::TransactionStatus;
    match TransactionStatus::try_from(status) {
        Ok(TransactionStatus::Committed) => "Committed",
        Ok(TransactionStatus::Pending) => "Pending",
        Ok(TransactionStatus::Unspecified) | Err(_) => "Unknown",
        Ok(_) => "Not committed",
    }
}

#[derive(Debug, Deserialize)]
pub struct AnchorsQuery {
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    page: String,
}

pub async fn anchors(
    State(portal): State<AppState>,
    Query(query): Query<AnchorsQuery>,
    headers: HeaderMap,
) -> Result<Html<String>, ErrorPage> {
    let department = &portal.config.department;
    let listed = portal
        .node
        .node()
        .list_anchors(ListAnchorsRequest {
            dataset: query.dataset.clone(),
            page_size: ANCHORS_PER_PAGE,
            page_token: query.page.clone(),
            ..ListAnchorsRequest::default()
        })
        .await
        .map_err(|status| ErrorPage::from_status(department, &status))?
        .into_inner();
    let session = portal.sessions.get(&headers);
    let page = layout(
        &frame(&portal, session.as_ref()),
        &format!("Anchors of dataset {}", query.dataset),
        html! {
            (search_form(&query.dataset))
            @if listed.anchors.is_empty() {
                p { "No records of this dataset are anchored." }
            } @else {
                table id="anchors-table" {
                    thead { tr { th scope="col" { "Record" } th scope="col" { "Department" } th scope="col" { "Block" } th scope="col" { "Time" } th scope="col" { "Transaction" } } }
                    tbody {
                        @for anchor in &listed.anchors {
                            @let record = anchor.envelope.as_ref()
                                .and_then(|e| Transaction::decode(&e.payload[..]).ok())
                                .and_then(|t| t.body)
                                .and_then(|body| match body {
                                    govchain_proto::types::v1::transaction::Body::AnchorRecord(a) => Some(a.record_id),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            @let height = anchor.position.as_ref().map_or(0, |p| p.height);
                            @let id = hex::encode(&anchor.transaction_id);
                            tr {
                                th scope="row" { (record) }
                                td { (anchor.department) }
                                td { a href={ "/explorer/block/" (height) } { (height) } }
                                td { (format_time(anchor.block_timestamp_ms)) }
                                td { a href={ "/explorer/tx/" (id) } { (short_hex(&anchor.transaction_id)) } }
                            }
                        }
                    }
                }
                @if !listed.next_page_token.is_empty() {
                    p { a href={ "/explorer/anchors?dataset=" (query.dataset) "&page=" (listed.next_page_token) } { "More anchors" } }
                }
            }
        },
    );
    Ok(Html(page.into_string()))
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /explorer/search?q=`: a number is a block height, 64 hex
/// characters a transaction id, anything else a dataset name.
pub async fn search(
    State(portal): State<AppState>,
    Query(query): Query<SearchQuery>,
) -> Result<Response, ErrorPage> {
    let q = query.q.trim();
    if q.is_empty() {
        return Ok(Redirect::to("/explorer").into_response());
    }
    let target = if q.bytes().all(|b| b.is_ascii_digit()) {
        format!("/explorer/block/{q}")
    } else if q.len() == 64 && q.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("/explorer/tx/{}", q.to_ascii_lowercase())
    } else if q.len() <= 128
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b))
    {
        format!("/explorer/anchors?dataset={q}")
    } else {
        return Err(ErrorPage::new(
            StatusCode::BAD_REQUEST,
            &portal.config.department,
            "Search for a block height, a transaction id (64 hex characters) or a dataset name.",
        ));
    };
    Ok(Redirect::to(&target).into_response())
}
