//! Joining from a state snapshot instead of replaying the chain.
//!
//! Serving ([`serve`], behind `ConsensusService.FetchStateSnapshot`): one
//! ledger read snapshot gives the head block and the state at it. The
//! state tree's 256 part summaries come from the stored tree
//! (`govchain_exec::state_tree::snapshot`); the entries are sorted into
//! their parts in one pass over the state, spilled to one file per part
//! under `<data_dir>/snapshot-serve/`, so memory stays bounded whatever
//! the state's size; then each part is streamed in messages of at most
//! [`PART_MESSAGE_BYTES_MAX`].
//!
//! Fetching ([`join`], at start when `state_sync = true` and the data
//! directory holds no ledger): from one peer at a time, it reads the start
//! message, checks the chain of headers and commit certificates from
//! genesis up to the snapshot's block (headers only, with the validator
//! set each header announces), checks the block's body, folds the
//! summaries into the header's state root, then rebuilds and checks each
//! part as it arrives before it is stored. Three stages overlap: the
//! stream receives part i + 1 while a blocking thread checks part i and
//! the `snapshot-install` thread writes the parts checked before it (in
//! sorted batches, see `SnapshotInstall::add`). A peer that sends anything
//! that does not check is left for the next; the partial install is
//! discarded.
//!
//! **Invariant:** nothing is stored that was not checked against a state
//! root certified by a quorum of the validator set in force, and the
//! ledger appears only once every part checked (`SnapshotInstall`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure};
use govchain_crypto::Digest;
use govchain_exec::state_tree::key_hash;
use govchain_exec::state_tree::snapshot::{self, PARTS, Part, Summary};
use govchain_exec::{StateError, StateRead, check_fetched_block, transaction_id};
use govchain_ledger::{Ledger, SnapshotBlock, SnapshotInstall};
use govchain_pbft::ValidatorSet;
use govchain_proto::consensus::v1::consensus_service_client::ConsensusServiceClient;
use govchain_proto::consensus::v1::{
    FetchBlocksRequest, FetchStateSnapshotRequest, FetchStateSnapshotResponse, StateEntry,
    StateSnapshotPart, StateSnapshotPartSummary, StateSnapshotStart,
    fetch_state_snapshot_response::Kind,
};
use govchain_proto::types::v1::CommittedBlock;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tonic::Status;
use tonic::transport::Endpoint;
use tracing::{info, warn};

use crate::chain_state::{self, HeadState};
use crate::config::Settings;
use crate::errors::internal;
use crate::peers::PEER_MESSAGE_BYTES_MAX;
use crate::tls::peer_client_config;

/// The entries of one message of a part, in encoded bytes at most (one
/// entry larger than this goes alone).
pub const PART_MESSAGE_BYTES_MAX: usize = 1024 * 1024;
/// The most a joiner holds of one part before checking it: a part is
/// 1/256 of the state, so this admits states up to 64 GiB, and a peer that
/// sends more is refused rather than let fill the joiner's memory.
pub const PART_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Where a serving node spills the parts, inside its data directory.
pub const SPILL_DIR_NAME: &str = "snapshot-serve";
/// Headers asked for per call while checking the chain up to a snapshot.
const HEADERS_PER_CALL: u64 = crate::sync::SYNC_BATCH_BLOCKS_MAX;
/// How long a peer may take between two messages of a snapshot.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The serving side: one snapshot at a time per node, each a pass over
/// the whole state.
pub struct Server {
    spill_dir: PathBuf,
    busy: Arc<tokio::sync::Semaphore>,
}

impl Server {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            spill_dir: data_dir.join(SPILL_DIR_NAME),
            busy: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Leave to send a snapshot; `None` while another is being sent.
    pub fn try_begin(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.busy.clone().try_acquire_owned().ok()
    }
}

type Message = Result<FetchStateSnapshotResponse, Status>;

/// Streams the state at the head to `sender`; runs on a blocking thread.
pub fn serve(
    ledger: &Ledger,
    server: &Server,
    sender: &mpsc::Sender<Message>,
) -> Result<(), Status> {
    let view = ledger.head_view().map_err(crate::errors::ledger_read)?;
    let height = view.head().height;
    if height == 0 {
        return Err(Status::failed_precondition(
            "this node has no block yet, so no certified state to send",
        ));
    }
    let encoded = view
        .head_block()
        .map_err(crate::errors::ledger_read)?
        .ok_or_else(|| Status::internal(format!("head block {height} is missing")))?;
    let block = CommittedBlock::decode(encoded.as_slice())
        .map_err(|err| internal("stored block does not decode", err))?;
    let state = HeadState(view);
    let summaries =
        snapshot::summaries(&state).map_err(|err| internal("reading the state tree", err))?;
    // A fresh directory per snapshot: `busy` lets one run at a time, and
    // what a crashed run left is removed here.
    let _ = std::fs::remove_dir_all(&server.spill_dir);
    std::fs::create_dir_all(&server.spill_dir)
        .map_err(|err| internal("creating the snapshot spill directory", err))?;
    let spilled = spill(&state, &server.spill_dir);
    drop(state);
    let result = spilled.and_then(|entries| {
        send(
            sender,
            Kind::Start(StateSnapshotStart {
                block: Some(block),
                summaries: summaries.iter().map(summary_to_wire).collect(),
                state_entries: entries,
            }),
        )?;
        for index in 0..PARTS {
            send_part(sender, &server.spill_dir, index)?;
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&server.spill_dir);
    result
}

fn send(sender: &mpsc::Sender<Message>, kind: Kind) -> Result<(), Status> {
    sender
        .blocking_send(Ok(FetchStateSnapshotResponse { kind: Some(kind) }))
        .map_err(|_| Status::cancelled("the receiver went away"))
}

fn part_file(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("{index:03}.part"))
}

/// One pass over the state, each entry appended (length-prefixed) to its
/// part's file; returns how many entries there are.
fn spill(state: &HeadState, dir: &Path) -> Result<u64, Status> {
    let mut files = (0..PARTS)
        .map(|index| File::create(part_file(dir, index)).map(BufWriter::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| internal("creating a snapshot part file", err))?;
    let mut entries = 0_u64;
    state
        .0
        .for_each_state(|key, value| -> anyhow::Result<()> {
            let file = &mut files[snapshot::part_of(&key_hash(key))];
            for bytes in [key, value] {
                file.write_all(&(bytes.len() as u32).to_be_bytes())?;
                file.write_all(bytes)?;
            }
            entries += 1;
            Ok(())
        })
        .map_err(|err| internal("spilling the state into part files", format!("{err:#}")))?;
    for file in files {
        file.into_inner()
            .map_err(|err| internal("writing a snapshot part file", err.into_error()))?;
    }
    Ok(entries)
}

fn send_part(sender: &mpsc::Sender<Message>, dir: &Path, index: usize) -> Result<(), Status> {
    let file = File::open(part_file(dir, index))
        .map_err(|err| internal("reading a snapshot part file", err))?;
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut bytes = 0;
    loop {
        let Some(key) = read_field(&mut reader)? else {
            break;
        };
        let value = read_field(&mut reader)?
            .ok_or_else(|| Status::internal("a snapshot part file ends inside an entry"))?;
        let size = key.len() + value.len();
        if !entries.is_empty() && bytes + size > PART_MESSAGE_BYTES_MAX {
            send(
                sender,
                part_message(index, std::mem::take(&mut entries), false),
            )?;
            bytes = 0;
        }
        bytes += size;
        entries.push(StateEntry { key, value });
    }
    send(sender, part_message(index, entries, true))
}

fn part_message(index: usize, entries: Vec<StateEntry>, last: bool) -> Kind {
    Kind::Part(StateSnapshotPart {
        index: index as u32,
        entries,
        last,
    })
}

fn read_field(reader: &mut impl std::io::Read) -> Result<Option<Vec<u8>>, Status> {
    let mut len = [0; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(internal("reading a snapshot part file", err)),
    }
    let mut field = vec![0; u32::from_be_bytes(len) as usize];
    reader
        .read_exact(&mut field)
        .map_err(|err| internal("reading a snapshot part file", err))?;
    Ok(Some(field))
}

fn summary_to_wire(summary: &Summary) -> StateSnapshotPartSummary {
    match summary {
        Summary::Empty => StateSnapshotPartSummary::default(),
        Summary::Leaf {
            key_hash,
            value_hash,
        } => StateSnapshotPartSummary {
            key_hash: key_hash.to_vec(),
            value_hash: value_hash.to_vec(),
            internal_hash: Vec::new(),
        },
        Summary::Internal(hash) => StateSnapshotPartSummary {
            internal_hash: hash.to_vec(),
            ..Default::default()
        },
    }
}

fn summary_from_wire(wire: &StateSnapshotPartSummary) -> anyhow::Result<Summary> {
    let digest = |bytes: &[u8]| Digest::from_slice(bytes).map_err(|err| anyhow!("{err}"));
    match (
        wire.key_hash.is_empty(),
        wire.value_hash.is_empty(),
        wire.internal_hash.is_empty(),
    ) {
        (true, true, true) => Ok(Summary::Empty),
        (false, false, true) => Ok(Summary::Leaf {
            key_hash: digest(&wire.key_hash)?,
            value_hash: digest(&wire.value_hash)?,
        }),
        (true, true, false) => Ok(Summary::Internal(digest(&wire.internal_hash)?)),
        _ => bail!("a part summary sets both a leaf and an internal hash"),
    }
}

/// What [`join`] installed.
#[derive(Clone, Copy, Debug)]
pub struct Joined {
    pub height: u64,
    pub state_entries: u64,
    /// The entries' keys and values, in bytes.
    pub state_bytes: u64,
    pub peer: u32,
    pub elapsed: Duration,
}

/// Installs the state of a peer's head into `settings.data_dir`, which
/// holds no ledger; tries each peer in turn. `None` when no peer has a
/// block yet or none gave a snapshot that checks: the node then syncs
/// block by block from genesis, which is always safe.
pub async fn join(settings: &Settings) -> Option<Joined> {
    for peer in &settings.peers {
        let started = Instant::now();
        match join_from(settings, peer).await {
            Ok(Some(Installed {
                height,
                state_entries,
                state_bytes,
            })) => {
                return Some(Joined {
                    height,
                    state_entries,
                    state_bytes,
                    peer: peer.index,
                    elapsed: started.elapsed(),
                });
            }
            Ok(None) => {
                info!(node = %settings.name, peer = %peer.name, "peer has no block yet to take a state snapshot of");
            }
            Err(err) => {
                warn!(node = %settings.name, peer = %peer.name, error = format!("{err:#}"), "state snapshot from peer failed; trying another");
            }
        }
    }
    warn!(node = %settings.name, "no peer gave a state snapshot that checks; syncing block by block from genesis instead");
    None
}

async fn join_from(
    settings: &Settings,
    peer: &crate::config::Peer,
) -> anyhow::Result<Option<Installed>> {
    let channel = Endpoint::from_shared(peer.address.clone())?
        .tls_config(peer_client_config(settings, &peer.name))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let mut client =
        ConsensusServiceClient::new(channel).max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);
    let stream = client
        .fetch_state_snapshot(FetchStateSnapshotRequest {})
        .await;
    let mut stream = match stream {
        Ok(stream) => stream.into_inner(),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => return Ok(None),
        Err(status) => return Err(status.into()),
    };
    let Some(Kind::Start(start)) = next(&mut stream).await? else {
        bail!("the snapshot does not begin with its start message");
    };
    let genesis = &settings.genesis;
    let block = start
        .block
        .ok_or_else(|| anyhow!("the start message has no block"))?;
    let chain_started = Instant::now();
    let (height, header) = check_chain_to(settings, &mut client, &block).await?;
    let chain_seconds = chain_started.elapsed().as_secs_f64();
    let summaries = start
        .summaries
        .iter()
        .map(summary_from_wire)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (root, top_nodes) = snapshot::fold(&summaries)?;
    let state_root = Digest::from_slice(&header.state_root)?;
    ensure!(
        root == state_root,
        "the part summaries fold to {root}, not the state root {state_root} of certified block {height}"
    );
    info!(node = %settings.name, peer = %peer.name, height, entries = start.state_entries, chain_seconds, "checked the certificates up to the snapshot's block; fetching its state");
    let install = SnapshotInstall::begin(&settings.data_dir, &genesis.chain_id, genesis.hash())?;
    let installer = Installer::start(install)?;
    let fetched = fetch_parts(&mut stream, &summaries, &installer).await;
    // Joined whatever happened, so no write outlives this attempt; a
    // storage failure explains why the fetch stopped, so it comes first.
    let mut install = installer.finish().await?;
    let departments_value = fetched?;
    let parent_hash = Digest::from_slice(&header.parent_hash)?;
    let appendable = installed_block(settings, block, departments_value)?;
    let hash = Digest::from_slice(&appendable.committed.block_hash)?;
    let timestamp_ms = header.timestamp_ms;
    // The last batch's inserts and the durable commit: off the runtime.
    let installed = tokio::task::spawn_blocking(move || -> anyhow::Result<Installed> {
        install.add(Vec::new(), top_nodes)?;
        let installed = Installed {
            height,
            state_entries: install.state_entries(),
            state_bytes: install.state_bytes(),
        };
        install.finish(SnapshotBlock {
            height,
            hash,
            parent_hash,
            state_root,
            timestamp_ms,
            encoded: &appendable.encoded,
            transactions: &appendable.transactions,
            query_keys: &appendable.query_keys,
        })?;
        Ok(installed)
    })
    .await??;
    Ok(Some(installed))
}

/// What one peer's snapshot installed.
struct Installed {
    height: u64,
    state_entries: u64,
    state_bytes: u64,
}

/// Receives the parts in order, checks each against its summary on a
/// blocking thread while the next one arrives, and hands the checked ones
/// to `installer`; returns the departments entry if the state holds one.
async fn fetch_parts(
    stream: &mut tonic::Streaming<FetchStateSnapshotResponse>,
    summaries: &[Summary],
    installer: &Installer,
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut departments_value = None;
    let mut checking: Option<tokio::task::JoinHandle<anyhow::Result<CheckedPart>>> = None;
    let mut next_part = 0;
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut part_bytes = 0_usize;
    while next_part < PARTS {
        let Some(Kind::Part(part)) = next(stream).await? else {
            bail!("the snapshot ended at part {next_part} of {PARTS}");
        };
        ensure!(
            part.index as usize == next_part,
            "part {} arrived where part {next_part} was due",
            part.index
        );
        for entry in part.entries {
            part_bytes += entry.key.len() + entry.value.len();
            ensure!(
                part_bytes <= PART_BYTES_MAX,
                "part {next_part} holds more than {PART_BYTES_MAX} bytes"
            );
            entries.push((entry.key, entry.value));
        }
        if !part.last {
            continue;
        }
        part_bytes = 0;
        let taken = std::mem::take(&mut entries);
        let expected = summaries[next_part];
        let index = next_part;
        let check = tokio::task::spawn_blocking(move || {
            let rebuilt = Part::build(index, &taken)?;
            rebuilt.verify(&expected)?;
            Ok(CheckedPart {
                entries: taken,
                nodes: rebuilt.nodes,
            })
        });
        if let Some(previous) = checking.replace(check) {
            hand_over(previous.await??, &mut departments_value, installer).await?;
        }
        next_part += 1;
    }
    if let Some(last) = checking {
        hand_over(last.await??, &mut departments_value, installer).await?;
    }
    Ok(departments_value)
}

/// A part whose entries rebuilt the summary the certified root vouches for.
struct CheckedPart {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    nodes: BTreeMap<Vec<u8>, Vec<u8>>,
}

async fn hand_over(
    part: CheckedPart,
    departments_value: &mut Option<Vec<u8>>,
    installer: &Installer,
) -> anyhow::Result<()> {
    if let Some((_, value)) = part
        .entries
        .iter()
        .find(|(key, _)| key.as_slice() == govchain_exec::governance::DEPARTMENTS_KEY)
    {
        *departments_value = Some(value.clone());
    }
    installer.add(part).await
}

/// Checked parts waiting for the install thread, at most: the fetch runs
/// ahead of the ledger's writes by this much (each part is 1/256 of the
/// state).
const INSTALL_QUEUE_PARTS: usize = 4;

/// Writes checked parts into the [`SnapshotInstall`] on a thread of its
/// own, so that the ledger's inserts overlap fetching and checking.
struct Installer {
    parts: mpsc::Sender<CheckedPart>,
    thread: std::thread::JoinHandle<Result<SnapshotInstall, govchain_ledger::StorageFailure>>,
}

impl Installer {
    fn start(mut install: SnapshotInstall) -> anyhow::Result<Self> {
        let (parts, mut queued) = mpsc::channel::<CheckedPart>(INSTALL_QUEUE_PARTS);
        let thread = std::thread::Builder::new()
            .name("snapshot-install".into())
            .spawn(move || {
                while let Some(part) = queued.blocking_recv() {
                    install.add(part.entries, part.nodes)?;
                }
                Ok(install)
            })?;
        Ok(Self { parts, thread })
    }

    /// Queues `part`; waits while the queue is full.
    async fn add(&self, part: CheckedPart) -> anyhow::Result<()> {
        self.parts
            .send(part)
            .await
            .map_err(|_| anyhow!("the snapshot install stopped"))
    }

    /// Waits until every queued part is written.
    async fn finish(self) -> anyhow::Result<SnapshotInstall> {
        let Self { parts, thread } = self;
        drop(parts);
        let joined = tokio::task::spawn_blocking(move || thread.join()).await?;
        let install = joined.map_err(|_| anyhow!("the snapshot install thread panicked"))?;
        Ok(install?)
    }
}

async fn next(
    stream: &mut tonic::Streaming<FetchStateSnapshotResponse>,
) -> anyhow::Result<Option<Kind>> {
    let message = tokio::time::timeout(MESSAGE_TIMEOUT, stream.next())
        .await
        .map_err(|_| anyhow!("no snapshot message within {MESSAGE_TIMEOUT:?}"))?;
    match message {
        None => Ok(None),
        Some(message) => Ok(message?.kind),
    }
}

/// Checks the headers and commit certificates from genesis up to `block`
/// (fetched headers only), then `block` itself in full; returns its height
/// and header. Fetching runs ahead of checking (one task fetches the next
/// calls' headers while the last ones are checked), and each call's
/// certificates are checked in one batch of signatures per core
/// ([`check_headers`]).
async fn check_chain_to(
    settings: &Settings,
    client: &mut ConsensusServiceClient<tonic::transport::Channel>,
    block: &CommittedBlock,
) -> anyhow::Result<(u64, govchain_proto::types::v1::BlockHeader)> {
    let genesis = &settings.genesis;
    let limits = chain_state::block_limits(genesis);
    let body = block
        .block
        .as_ref()
        .ok_or_else(|| anyhow!("the snapshot's block has no body"))?;
    let (hash, header) = check_fetched_block(&genesis.chain_id, &limits, body)
        .map_err(|err| anyhow!("the snapshot's block: {err}"))?;
    let height = header.height;
    let (sender, mut fetched) = mpsc::channel(HEADER_CALLS_AHEAD);
    let fetcher = tokio::spawn(fetch_headers(client.clone(), height, sender));
    let mut chain = Chain {
        validators: Arc::new(crate::validator_set(genesis)?),
        parent: genesis.hash(),
        next: 1,
    };
    while let Some(headers) = fetched.recv().await {
        let mut headers = headers?;
        // The snapshot's own block: its body was checked above.
        if chain.next + headers.len() as u64 > height
            && let Some(last) = headers.last_mut()
        {
            *last = block.clone();
        }
        let chain_id = genesis.chain_id.clone();
        chain = tokio::task::spawn_blocking(move || check_headers(&chain_id, chain, &headers))
            .await??;
    }
    fetcher.abort();
    ensure!(
        chain.next == height + 1,
        "the peer sent headers up to {}, short of the snapshot's block {height}",
        chain.next - 1
    );
    ensure!(
        chain.parent == hash,
        "header {height} is not the snapshot's block"
    );
    Ok((height, header))
}

/// Header calls fetched ahead of the one being checked.
const HEADER_CALLS_AHEAD: usize = 4;

/// Fetches the headers `1..=height` in calls of [`HEADERS_PER_CALL`] and
/// sends each call's, in order; stops at the first error (sent on) or when
/// the receiver is gone.
async fn fetch_headers(
    mut client: ConsensusServiceClient<tonic::transport::Channel>,
    height: u64,
    sender: mpsc::Sender<anyhow::Result<Vec<CommittedBlock>>>,
) {
    let mut from = 1;
    while from <= height {
        let to = height.min(from + HEADERS_PER_CALL - 1);
        let call = async {
            let mut stream = client
                .fetch_blocks(FetchBlocksRequest {
                    from_height: from,
                    to_height: to,
                    headers_only: true,
                })
                .await?
                .into_inner();
            let mut headers = Vec::with_capacity((to - from + 1) as usize);
            while let Some(response) = stream.next().await {
                ensure!(
                    from + (headers.len() as u64) <= to,
                    "the peer sent more headers than asked for"
                );
                let at = from + headers.len() as u64;
                headers.push(
                    response?
                        .block
                        .ok_or_else(|| anyhow!("empty response for header {at}"))?,
                );
            }
            ensure!(
                headers.len() as u64 == to - from + 1,
                "the peer sent headers {from}..{}, short of {to}",
                from + headers.len() as u64
            );
            Ok(headers)
        };
        let result = call.await;
        let failed = result.is_err();
        if sender.send(result).await.is_err() || failed {
            return;
        }
        from = to + 1;
    }
}

/// Where the check of a chain of headers stands: the set that certifies
/// the next header, and the hash it must name as its parent.
#[derive(Debug)]
struct Chain {
    validators: Arc<ValidatorSet>,
    parent: Digest,
    next: u64,
}

/// Checks `headers`, the ones from `chain.next` on: each links to the one
/// before and has a quorum certificate of the set in force (genesis', then
/// each one a header announces, from the next header on). The links and
/// sets are followed in order; the certificates are then checked in one
/// batch of signatures per core (`pbft::verify_commit_certificates`,
/// with the verdicts of checking them one by one).
fn check_headers(
    chain_id: &str,
    mut chain: Chain,
    headers: &[CommittedBlock],
) -> anyhow::Result<Chain> {
    let mut checks = Vec::with_capacity(headers.len());
    for fetched in headers {
        let height = chain.next;
        let body = fetched
            .block
            .as_ref()
            .ok_or_else(|| anyhow!("header {height} is missing"))?;
        let digest = govchain_exec::block_hash(&body.header);
        let header =
            govchain_exec::decode_header(body).map_err(|err| anyhow!("header {height}: {err}"))?;
        ensure!(
            header.height == height,
            "the peer sent height {} for {height}",
            header.height
        );
        let parent = Digest::from_slice(&header.parent_hash)?;
        ensure!(
            parent == chain.parent,
            "header {height} names parent {parent}, but header {} is {}",
            height - 1,
            chain.parent
        );
        let certificate = fetched
            .certificate
            .as_ref()
            .ok_or_else(|| anyhow!("header {height} has no certificate"))?;
        let certificate =
            crate::wire::certificate_from_wire(certificate).map_err(anyhow::Error::msg)?;
        checks.push((chain.validators.clone(), height, digest, certificate));
        if let Some(next) = govchain_exec::governance::announced_set(&header.next_validators) {
            let next = next.map_err(|err| anyhow!("header {height}: next_validators: {err}"))?;
            chain.validators = Arc::new(next);
        }
        chain.parent = digest;
        chain.next += 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_core = checks.len().div_ceil(cores).max(1);
    let failures: Vec<anyhow::Error> = std::thread::scope(|scope| {
        let running: Vec<_> = checks
            .chunks(per_core)
            .map(|chunk| {
                scope.spawn(move || {
                    let batch: Vec<govchain_pbft::CertificateCheck<'_>> = chunk
                        .iter()
                        .map(|(validators, height, digest, certificate)| {
                            govchain_pbft::CertificateCheck {
                                validators,
                                seq: *height,
                                digest,
                                certificate,
                            }
                        })
                        .collect();
                    govchain_pbft::verify_commit_certificates(chain_id, &batch).map_err(
                        |(position, error)| {
                            anyhow!(
                                "header {}: the commit certificate does not verify: {error}",
                                chunk[position].1
                            )
                        },
                    )
                })
            })
            .collect();
        running
            .into_iter()
            .filter_map(|handle| match handle.join() {
                Ok(result) => result.err(),
                Err(_) => Some(anyhow!("a certificate check panicked")),
            })
            .collect()
    });
    match failures.into_iter().next() {
        Some(failure) => Err(failure),
        None => Ok(chain),
    }
}

/// The snapshot's block as the ledger keeps it, with its transactions'
/// ids and results and its query keys (named with the departments in the
/// snapshot's state).
fn installed_block(
    settings: &Settings,
    block: CommittedBlock,
    departments_value: Option<Vec<u8>>,
) -> anyhow::Result<crate::apply::Appendable> {
    struct One(Option<Vec<u8>>);
    impl StateRead for One {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
            Ok((key == govchain_exec::governance::DEPARTMENTS_KEY)
                .then(|| self.0.clone())
                .flatten())
        }
    }
    let genesis_departments = Arc::new(chain_state::departments(&settings.genesis));
    let departments = govchain_exec::governance::departments_in_force(
        &One(departments_value),
        &genesis_departments,
    )?;
    let query_keys = crate::query_index::keys(&block, &departments);
    let body = block.block.as_ref().expect("checked above");
    let transactions = body
        .transactions
        .iter()
        .zip(&block.results)
        .map(|(envelope, result)| {
            let id = transaction_id(
                &envelope.chain_id,
                &envelope.signer,
                envelope.nonce,
                &envelope.payload,
            );
            (id, result.encode_to_vec())
        })
        .collect::<Vec<_>>();
    ensure!(
        transactions.len() == body.transactions.len(),
        "the snapshot's block has {} results for {} transactions",
        block.results.len(),
        body.transactions.len()
    );
    Ok(crate::apply::Appendable {
        encoded: block.encode_to_vec(),
        committed: block,
        transactions,
        query_keys,
    })
}

#[cfg(test)]
mod tests {
    use govchain_crypto::SigningKey;
    use govchain_pbft::commit_signing_bytes;
    use govchain_proto::types::v1::{
        Block, BlockHeader, CommitCertificate, CommitSignature, ValidatorKey,
    };

    use super::*;

    const CHAIN: &str = "headers";

    fn key(i: u32) -> SigningKey {
        SigningKey::from_seed([0x50 + i as u8; 32])
    }

    /// Header `height` after `parent`, announcing `next` (indexes) and
    /// certified by `signers`; returns it and its hash.
    fn header(
        height: u64,
        parent: Digest,
        next: &[u32],
        signers: &[u32],
    ) -> (CommittedBlock, Digest) {
        let encoded = BlockHeader {
            chain_id: CHAIN.into(),
            height,
            parent_hash: parent.to_vec(),
            next_validators: next
                .iter()
                .map(|i| ValidatorKey {
                    index: *i,
                    consensus_key: key(*i).public_key().as_bytes().to_vec(),
                })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec();
        let hash = govchain_exec::block_hash(&encoded);
        let message = commit_signing_bytes(CHAIN, 0, height, &hash);
        let certificate = CommitCertificate {
            height,
            view: 0,
            block_hash: hash.to_vec(),
            signatures: signers
                .iter()
                .map(|i| CommitSignature {
                    validator_index: *i,
                    signature: key(*i).sign(&message).to_vec(),
                })
                .collect(),
        };
        let block = CommittedBlock {
            block_hash: hash.to_vec(),
            block: Some(Block {
                header: encoded,
                transactions: Vec::new(),
            }),
            certificate: Some(certificate),
            ..Default::default()
        };
        (block, hash)
    }

    /// Twelve headers from `genesis`: header 4 adds validator 4, and from
    /// header 6 on validator 4 signs instead of 1. `edit` changes the
    /// announcement or signers of one.
    fn chain(
        genesis: Digest,
        edit: impl Fn(u64, &mut Vec<u32>, &mut Vec<u32>),
    ) -> Vec<CommittedBlock> {
        let mut parent = genesis;
        (1..=12)
            .map(|height| {
                let mut next = if height == 4 {
                    vec![0, 1, 2, 3, 4]
                } else {
                    vec![]
                };
                // Five validators need four signatures (n - f).
                let mut signers = match height {
                    ..=4 => vec![0, 1, 2],
                    5 => vec![0, 1, 2, 3],
                    _ => vec![0, 2, 3, 4],
                };
                edit(height, &mut next, &mut signers);
                let (block, hash) = header(height, parent, &next, &signers);
                parent = hash;
                block
            })
            .collect()
    }

    fn start(genesis: Digest) -> Chain {
        Chain {
            validators: Arc::new(
                ValidatorSet::new((0..4).map(|i| key(i).public_key()).collect()).expect("four"),
            ),
            parent: genesis,
            next: 1,
        }
    }

    #[test]
    fn headers_are_checked_in_order_with_the_sets_they_announce() {
        let genesis = Digest::sha256(b"genesis");
        let headers = chain(genesis, |_, _, _| {});
        // In one call, or in several.
        let whole = check_headers(CHAIN, start(genesis), &headers).expect("a certified chain");
        assert_eq!(whole.next, 13);
        let first = check_headers(CHAIN, start(genesis), &headers[..5]).expect("first part");
        let rest = check_headers(CHAIN, first, &headers[5..]).expect("rest");
        assert_eq!((rest.next, rest.parent), (13, whole.parent));
        assert_eq!(rest.validators.len(), 5);

        // Without the announcement, validator 4 cannot certify header 6.
        let unannounced = chain(genesis, |height, next, _| {
            if height == 4 {
                next.clear();
            }
        });
        let err = check_headers(CHAIN, start(genesis), &unannounced).expect_err("unknown signer");
        assert!(err.to_string().starts_with("header 6: "), "{err}");

        // Too few signatures on header 9, named although others follow.
        let short = chain(genesis, |height, _, signers| {
            if height == 9 {
                signers.truncate(2);
            }
        });
        let err = check_headers(CHAIN, start(genesis), &short).expect_err("too few");
        assert!(err.to_string().starts_with("header 9: "), "{err}");

        // A forged signature on header 11.
        let mut forged = headers.clone();
        forged[10]
            .certificate
            .as_mut()
            .expect("certificate")
            .signatures[1]
            .signature = key(2).sign(b"something else").to_vec();
        let err = check_headers(CHAIN, start(genesis), &forged).expect_err("forged");
        assert!(err.to_string().starts_with("header 11: "), "{err}");

        // A header of another chain in the middle: the link breaks.
        let mut spliced = headers.clone();
        spliced[6] = header(7, Digest::sha256(b"elsewhere"), &[], &[0, 2, 3, 4]).0;
        let err = check_headers(CHAIN, start(genesis), &spliced).expect_err("unlinked");
        assert!(err.to_string().contains("header 7 names parent"), "{err}");
    }
}
