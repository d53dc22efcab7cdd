//! Pruning old block bodies behind `prune_horizon_blocks`: the ledger
//! (`Ledger::prune_bodies`) rewrites sealed log segments whose blocks all
//! lie more than the horizon below the head, keeping of each block what
//! [`strip`] keeps, its header and commit certificate, so the chain of
//! certificates from genesis stays verifiable (`ledger verify`, a joiner's
//! state sync) while the transactions and their results go.
//!
//! **Invariant:** a block within the horizon, and every block above the
//! ledger's last checkpoint (which a restart may re-apply), is whole.

use std::sync::Arc;
use std::time::Duration;

use govchain_exec::Departments;
use govchain_ledger::{Ledger, Stripped};
use govchain_proto::types::v1::CommittedBlock;
use prost::Message as _;

use crate::shared::Shared;

pub use crate::config::PRUNE_HORIZON_BLOCKS_MIN;

/// How often the node looks for segments to prune.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// What is kept of a pruned block, and what a `headers_only` fetch sends:
/// the block without its transactions and their results.
pub(crate) fn headers_only(block: &mut CommittedBlock) {
    block.results.clear();
    if let Some(body) = &mut block.block {
        body.transactions.clear();
    }
}

/// Strips one stored block for [`Ledger::prune_bodies`], counting the query
/// index keys it derived (`ledger verify` can no longer derive them).
pub(crate) fn strip(encoded: &[u8], departments: &Departments) -> Result<Stripped, String> {
    let mut block = CommittedBlock::decode(encoded)
        .map_err(|err| format!("the stored block does not decode: {err}"))?;
    if block.certificate.is_none() || block.block.is_none() {
        return Err("the stored block has no header or no certificate".to_owned());
    }
    let query_keys = crate::query_index::keys(&block, departments).len() as u64;
    headers_only(&mut block);
    Ok(Stripped {
        encoded: block.encode_to_vec(),
        query_keys,
    })
}

/// Prunes what lies more than `horizon` blocks below the head; returns
/// what the ledger did.
pub(crate) fn prune_once(
    ledger: &Ledger,
    departments: &Departments,
    horizon: u64,
) -> Result<govchain_ledger::PruneReport, govchain_ledger::PruneError> {
    let keep_from = ledger.head().height.saturating_sub(horizon) + 1;
    ledger.prune_bodies(keep_from, &mut |_, block| strip(block, departments))
}

/// Prunes the ledger in `data_dir` offline (`govchain ledger prune`; the
/// node must be stopped), keeping `horizon` blocks below the head whole.
/// `progress(done, at_most)` follows the blocks stripped.
pub fn prune_ledger(
    data_dir: &std::path::Path,
    genesis: &govchain_pki::Genesis,
    horizon: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<govchain_ledger::PruneReport> {
    use anyhow::Context as _;
    anyhow::ensure!(
        horizon >= PRUNE_HORIZON_BLOCKS_MIN,
        "--keep-blocks {horizon}: must be at least {PRUNE_HORIZON_BLOCKS_MIN}"
    );
    let ledger = Ledger::open(data_dir, &genesis.chain_id, genesis.hash()).with_context(|| {
        format!(
            "cannot open the ledger in {} (is its node still running?)",
            data_dir.display()
        )
    })?;
    let departments = govchain_exec::governance::departments_in_force(
        &crate::chain_state::LedgerState(&ledger),
        &Arc::new(crate::chain_state::departments(genesis)),
    )?;
    let keep_from = ledger.head().height.saturating_sub(horizon) + 1;
    let at_most = keep_from.saturating_sub(ledger.bodies_from());
    let mut done = 0;
    Ok(ledger.prune_bodies(keep_from, &mut |_, block| {
        done += 1;
        progress(done, at_most);
        strip(block, &departments)
    })?)
}

/// Prunes now and then, off the async threads.
pub(crate) async fn run(shared: Arc<Shared>, horizon: u64) {
    let mut timer = tokio::time::interval(PRUNE_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        timer.tick().await;
        let shared = shared.clone();
        let result = tokio::task::spawn_blocking(move || {
            // The departments in force at the head name every block's
            // signers by the keys they used then, as `ledger verify` does.
            prune_once(&shared.ledger, &shared.departments(), horizon)
        })
        .await;
        match result {
            Ok(Ok(report)) if report.segments > 0 => {
                tracing::info!(
                    segments = report.segments,
                    blocks = report.blocks,
                    freed_bytes = report.bytes_before.saturating_sub(report.bytes_after),
                    bodies_from = report.bodies_from,
                    "pruned old block bodies (headers and certificates kept)"
                );
            }
            Ok(Ok(report)) if report.held_by_backup => {
                tracing::info!("pruning waits for a backup in progress");
            }
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "pruning block bodies failed"),
            Err(err) => tracing::warn!(error = %err, "pruning block bodies panicked"),
        }
    }
}
