//! `govchain devnet`: a local consortium of validators for development.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use govchain_crypto::SigningKey;
use govchain_node::{NodeFile, PeerFile};
use govchain_proto::node::v1::{
    GetAccountRequest, GetStatusRequest, GetTransactionRequest, SubmitTransactionRequest,
    TransactionStatus,
};
use std::os::unix::process::CommandExt as _;

use crate::client::{Target, connect};
use crate::devnet_file::{DevnetFile, DevnetNode};
use crate::envelope::{Anchor, sign};

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
        govchain devnet                      # four validators in ./devnet, in the foreground\n  \
        govchain devnet --detach             # the same, in the background\n  \
        govchain status                      # then ask them how they are doing\n  \
        govchain devnet stop                 # stop detached nodes"
)]
pub struct DevnetArgs {
    #[command(subcommand)]
    pub command: Option<DevnetCommand>,
    /// Directory for certificates, genesis, node data and devnet.json.
    #[arg(
        long,
        env = "GOVCHAIN_DIR",
        value_name = "DIR",
        default_value = "./devnet"
    )]
    pub dir: PathBuf,
    /// Number of validators.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub validators: u32,
    /// Client API port of the first node; the others count up from it.
    /// 0 picks any free ports.
    #[arg(long, value_name = "P", default_value_t = 7050)]
    pub base_port: u16,
    /// Prometheus `/metrics` port of the first node (`metrics_listen`); the
    /// others count up from it. 0 picks any free ports; by default 9464, or
    /// free ports when --base-port is 0.
    #[arg(long, value_name = "P")]
    pub metrics_base_port: Option<u16>,
    /// Web portal (HTTPS) port of the first node (`portal_listen`); the
    /// others count up from it. 0 picks any free ports; by default 8443, or
    /// free ports when --base-port is 0.
    #[arg(long, value_name = "P")]
    pub portal_base_port: Option<u16>,
    /// Delete the directory's chain data and certificates first.
    #[arg(long)]
    pub reset: bool,
    /// Start the nodes in the background and return.
    #[arg(long)]
    pub detach: bool,
    /// Leave the chain empty: no demo records, citizen or approval case
    /// (for a clean start, or tests that count what is on chain).
    #[arg(long)]
    pub no_demo: bool,
}

#[derive(Debug, Subcommand)]
pub enum DevnetCommand {
    /// Stop the nodes of a detached devnet.
    Stop(DevnetStopArgs),
}

#[derive(Debug, Args)]
pub struct DevnetStopArgs {
    /// The devnet directory.
    #[arg(
        long,
        env = "GOVCHAIN_DIR",
        value_name = "DIR",
        default_value = "./devnet"
    )]
    pub dir: PathBuf,
}

/// The devnet's chain id.
pub const DEVNET_CHAIN_ID: &str = "govchain-devnet";
/// Department names for the first validators; more get numbered names.
const DEPARTMENTS: [&str; 8] = [
    "health",
    "tax",
    "police",
    "civil",
    "transport",
    "education",
    "housing",
    "labour",
];
/// Who may attest what on a devnet: the civil registry vouches for
/// identity data, the police for photos, and so on.
const DEVNET_ATTESTERS: [(&str, &[&str]); 4] = [
    ("civil", &["name", "date_of_birth", "photo", "address"]),
    ("police", &["name", "photo"]),
    ("health", &["vaccination_status"]),
    ("transport", &["driving_licence"]),
];

fn devnet_attesters(names: &[String]) -> Vec<(String, Vec<String>)> {
    DEVNET_ATTESTERS
        .iter()
        .filter(|(department, _)| names.iter().any(|name| name == department))
        .map(|(department, attributes)| {
            (
                (*department).to_owned(),
                attributes.iter().map(|a| (*a).to_owned()).collect(),
            )
        })
        .collect()
}

/// How long to wait for the nodes to start and connect.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long stopped nodes get to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Demo records anchored once the consortium is up.
const DEMO_RECORDS: u64 = 8;

/// Starts (or, with `stop`, stops) a local devnet.
pub async fn run(args: DevnetArgs) -> anyhow::Result<()> {
    if let Some(DevnetCommand::Stop(stop)) = args.command {
        return stop_detached(&stop.dir);
    }
    if args.validators == 0 || args.validators > 100 {
        bail!("--validators must be 1 to 100, got {}", args.validators);
    }
    let dir = args.dir.clone();
    if args.reset && dir.exists() {
        if let Ok(file) = DevnetFile::load(&dir)
            && file.nodes.iter().any(|n| n.pid.is_some_and(process_alive))
        {
            bail!(
                "the devnet in {} is running; stop it first with `govchain devnet stop --dir {}`",
                dir.display(),
                dir.display()
            );
        }
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let file = prepare(&dir, &args)?;
    let mut children = start_nodes(&dir, &file, args.detach)?;
    let mut file = file;
    if args.detach {
        for (node, child) in file.nodes.iter_mut().zip(&children) {
            node.pid = Some(child.id());
        }
    }
    file.save(&dir)?;
    if let Err(err) = wait_until_connected(&dir, &file, &mut children).await {
        eprintln!("{err:#}");
        eprintln!(
            "the nodes' logs are in {}/nodes/<name>/node.log",
            dir.display()
        );
        stop_children(&mut children);
        bail!("the devnet did not start");
    }
    let (demo_citizen, demo_case) = if args.no_demo {
        (None, None)
    } else {
        match demo_transactions(&dir, &file).await {
            Ok(height) => {
                println!("anchored {DEMO_RECORDS} demo records; the chain is at height {height}\n")
            }
            Err(err) => eprintln!("warning: demo transactions failed: {err:#}"),
        }
        let demo_citizen = demo_identity(&dir, &file).await;
        let demo_case = match &demo_citizen {
            Some(citizen) => demo_case(&dir, &file, &citizen.key_file).await,
            None => None,
        };
        if let Some(directory) = demo_directory(&dir, &file).await {
            print_demo_directory(&dir, &directory);
        }
        if let Some(proposal) = demo_proposal(&dir, &file).await {
            print_demo_proposal(&dir, &proposal);
        }
        (demo_citizen, demo_case)
    };
    print_summary(
        &dir,
        &file,
        args.detach,
        demo_citizen.as_ref(),
        demo_case.as_ref(),
    );
    if args.detach {
        return Ok(());
    }
    supervise(&mut children).await;
    Ok(())
}

/// Consecutive ports from `base`, or with `base` 0 any free ports.
fn ports(base: u16, n: u32) -> anyhow::Result<Vec<u16>> {
    if base == 0 {
        // Hold every listener until all are chosen, so no port repeats.
        let listeners = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()?;
        return listeners
            .iter()
            .map(|l| Ok(l.local_addr()?.port()))
            .collect();
    }
    (0..n)
        .map(|i| {
            u16::try_from(u32::from(base) + i)
                .context("--base-port plus the number of validators exceeds 65535")
        })
        .collect()
}

/// The nodes' client API, metrics and portal ports.
struct NodePorts {
    api: Vec<u16>,
    metrics: Vec<u16>,
    portal: Vec<u16>,
}

/// The nodes' ports. Free ports are chosen in one go, so that the sets
/// never overlap.
fn node_ports(args: &DevnetArgs) -> anyhow::Result<NodePorts> {
    let n = args.validators;
    let or_default = |given: Option<u16>, default: u16| {
        given.unwrap_or(if args.base_port == 0 { 0 } else { default })
    };
    let bases = [
        args.base_port,
        or_default(args.metrics_base_port, METRICS_BASE_PORT_DEFAULT),
        or_default(args.portal_base_port, PORTAL_BASE_PORT_DEFAULT),
    ];
    let free = bases.iter().filter(|base| **base == 0).count();
    let mut free = ports(0, n * u32::try_from(free).unwrap_or(3))?.into_iter();
    let mut sets = Vec::new();
    for base in bases {
        sets.push(if base == 0 {
            free.by_ref().take(n as usize).collect()
        } else {
            ports(base, n)?
        });
    }
    let mut sets = sets.into_iter();
    let mut next = || sets.next().unwrap_or_default();
    Ok(NodePorts {
        api: next(),
        metrics: next(),
        portal: next(),
    })
}

/// The first devnet node's web portal port.
const PORTAL_BASE_PORT_DEFAULT: u16 = 8443;

/// The first devnet node's metrics port: OpenTelemetry's default for a
/// Prometheus endpoint.
const METRICS_BASE_PORT_DEFAULT: u16 = 9464;

fn department_names(n: u32) -> Vec<String> {
    (0..n as usize)
        .map(|i| {
            DEPARTMENTS
                .get(i)
                .map_or_else(|| format!("dept{i}"), |s| (*s).to_string())
        })
        .collect()
}

/// Writes certificates, genesis and node configs on first use; later runs
/// restart the same consortium on its existing data.
pub(crate) fn prepare(dir: &Path, args: &DevnetArgs) -> anyhow::Result<DevnetFile> {
    if DevnetFile::path(dir).exists() {
        let file = DevnetFile::load(dir)?;
        if file.nodes.len() != args.validators as usize {
            bail!(
                "{} holds a devnet of {} validators; pass --reset to replace it with {}",
                dir.display(),
                file.nodes.len(),
                args.validators
            );
        }
        if let Some(node) = file.nodes.iter().find(|n| n.pid.is_some_and(process_alive)) {
            bail!(
                "node {} of this devnet is already running; `govchain devnet stop --dir {}` first",
                node.name,
                dir.display()
            );
        }
        eprintln!(
            "restarting the devnet in {} on its existing data (--reset starts over)",
            dir.display()
        );
        return Ok(file);
    }
    let names = department_names(args.validators);
    let NodePorts {
        api: ports,
        metrics: metrics_ports,
        portal: portal_ports,
    } = node_ports(args)?;
    let certs = dir.join("certs");
    govchain_pki::init_consortium(&govchain_pki::InitOptions {
        observers: Vec::new(),
        out: certs.clone(),
        chain_id: DEVNET_CHAIN_ID.into(),
        departments: names.clone(),
        hosts: Vec::new(),
        force: false,
        attests: devnet_attesters(&names),
    })?;
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let node_dir = Path::new("nodes").join(name);
        std::fs::create_dir_all(dir.join(&node_dir))?;
        let up = PathBuf::from("../..");
        let dept = up.join("certs").join(name);
        let config = NodeFile {
            observer: false,
            state_sync: false,
            prune_horizon_blocks: None,
            block_log_segment_bytes: None,
            name: name.clone(),
            listen: format!("127.0.0.1:{}", ports[i]).parse()?,
            data_dir: PathBuf::from("data"),
            genesis: up.join("certs/genesis.json"),
            ca_certificate: up.join("certs/ca.crt"),
            certificate: dept.join("node.crt"),
            key: dept.join("node.key"),
            consensus_key: dept.join("consensus.key"),
            peers: names
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, peer)| PeerFile {
                    name: peer.clone(),
                    address: format!("https://127.0.0.1:{}", ports[j]),
                })
                .collect(),
            mempool: Default::default(),
            blobs: Default::default(),
            health_listen: None,
            metrics_listen: Some(format!("127.0.0.1:{}", metrics_ports[i]).parse()?),
            portal_listen: Some(format!("127.0.0.1:{}", portal_ports[i]).parse()?),
            portal_url: None,
        };
        config.save(&dir.join(&node_dir).join("node.toml"))?;
        nodes.push(DevnetNode {
            name: name.clone(),
            url: format!("https://127.0.0.1:{}", ports[i]),
            data_dir: node_dir.join("data"),
            config: node_dir.join("node.toml"),
            pid: None,
            metrics_url: Some(format!("http://127.0.0.1:{}/metrics", metrics_ports[i])),
            portal_url: Some(format!("https://127.0.0.1:{}/", portal_ports[i])),
        });
    }
    Ok(DevnetFile {
        chain_id: DEVNET_CHAIN_ID.into(),
        genesis: PathBuf::from("certs/genesis.json"),
        certs: PathBuf::from("certs"),
        nodes,
    })
}

pub(crate) fn start_nodes(
    dir: &Path,
    file: &DevnetFile,
    detach: bool,
) -> anyhow::Result<Vec<Child>> {
    for node in &file.nodes {
        let address = node.url.trim_start_matches("https://");
        if TcpListener::bind(address).is_err() {
            bail!(
                "port {address} of node {} is in use; stop what uses it or pick another --base-port",
                node.name
            );
        }
    }
    let exe = std::env::current_exe().context("cannot find the govchain executable")?;
    let mut children = Vec::new();
    for node in &file.nodes {
        let node_dir = dir
            .join(&node.config)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node_dir.join("node.log"))
            .with_context(|| format!("cannot open the log of node {}", node.name))?;
        let mut command = Command::new(&exe);
        command
            .arg("node")
            .arg("--config")
            .arg(dir.join(&node.config))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The devnet's node.toml files are the configuration: variables
        // that would override their keys (GOVCHAIN_KEY is also the CLI's
        // --key, which a shell may have exported) do not reach the nodes.
        for (variable, _) in std::env::vars_os() {
            if let Some(name) = variable.to_str()
                && govchain_node::config::is_override_variable(name)
            {
                command.env_remove(name);
            }
        }
        if detach {
            // Its own process group, so the terminal's Ctrl-C does not reach it.
            command.process_group(0);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start node {}", node.name))?;
        children.push(child);
    }
    Ok(children)
}

pub(crate) fn target(dir: &Path, file: &DevnetFile, index: usize) -> Target {
    let node = &file.nodes[index];
    Target {
        name: Some(node.name.clone()),
        url: node.url.clone(),
        ca: file.ca_certificate(dir),
        cert: file.client_certificate(dir, &node.name),
        key: file.client_key(dir, &node.name),
        server_name: None,
    }
}

pub(crate) async fn wait_until_connected(
    dir: &Path,
    file: &DevnetFile,
    children: &mut [Child],
) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(file.nodes.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} starting validators: {pos}/{len} connected ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let deadline = Instant::now() + START_TIMEOUT;
    let peers = file.nodes.len() - 1;
    loop {
        let mut ready = 0;
        for i in 0..file.nodes.len() {
            if let Ok(mut client) = connect(&target(dir, file, i)).await
                && let Ok(status) = client.get_status(GetStatusRequest {}).await
            {
                ready += usize::from(status.into_inner().connected_peers.len() == peers);
            }
        }
        bar.set_position(ready as u64);
        if let Some(i) = children
            .iter_mut()
            .position(|c| matches!(c.try_wait(), Ok(Some(_))))
        {
            bar.abandon();
            let log = dir.join(&file.nodes[i].config).with_file_name("node.log");
            bail!(
                "node {} exited while starting; see {}",
                file.nodes[i].name,
                log.display()
            );
        }
        if ready == file.nodes.len() {
            bar.finish_and_clear();
            return Ok(());
        }
        if Instant::now() > deadline {
            bar.abandon();
            bail!(
                "only {ready} of {} validators were up and connected after {START_TIMEOUT:?}",
                file.nodes.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each department anchors a few records in its own namespace
/// (`<department>/demo`), signed with its signing key and sent through its
/// own node with its own client certificate, as the chain requires.
async fn demo_transactions(dir: &Path, file: &DevnetFile) -> anyhow::Result<u64> {
    let mut lasts = Vec::new();
    let mut clients = Vec::new();
    let departments = file.nodes.len() as u64;
    for (index, node) in file.nodes.iter().enumerate() {
        let key_path = dir.join("certs").join(&node.name).join("signing.key");
        let key = SigningKey::from_pkcs8_pem(
            &std::fs::read_to_string(&key_path)
                .with_context(|| format!("cannot read {}", key_path.display()))?,
        )?;
        let mut client = connect(&target(dir, file, index)).await?;
        let account = client
            .get_account(GetAccountRequest {
                public_key: key.public_key().as_bytes().to_vec(),
                prove: false,
            })
            .await?
            .into_inner();
        let records =
            DEMO_RECORDS / departments + u64::from((index as u64) < DEMO_RECORDS % departments);
        for i in 0..records {
            let nonce = account.next_nonce + i;
            let department = &node.name;
            let content = format!("demo record {nonce} shared by {department}");
            let anchor = Anchor {
                dataset: format!("{department}/demo"),
                record_id: format!("record-{nonce}"),
                record_hash: govchain_crypto::Digest::sha256(content.as_bytes()),
                schema: "demo/v1".into(),
                record_time_ms: govchain_node::now_ms(),
            };
            let signed = sign(&key, &file.chain_id, nonce, &anchor.transaction());
            client
                .submit_transaction(SubmitTransactionRequest {
                    envelope: Some(signed.envelope),
                })
                .await?;
            if i + 1 == records {
                lasts.push((index, signed.id));
            }
        }
        clients.push(client);
    }
    // Each department's last record commits after its earlier ones.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut height = 0;
    for (index, last) in lasts {
        loop {
            let response = clients[index]
                .get_transaction(GetTransactionRequest {
                    transaction_id: last.to_vec(),
                    prove: false,
                })
                .await?
                .into_inner();
            if response.status == TransactionStatus::Committed as i32 {
                height = height.max(response.block_height);
                break;
            }
            if Instant::now() > deadline {
                bail!("the demo transactions did not commit within 30s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(height)
}

/// The department that holds and attests the demo citizen's name, and the
/// one the citizen consents to.
const DEMO_HOLDER: &str = "civil";
const DEMO_READER: &str = "tax";
const DEMO_PURPOSE: &str = "demo";

/// On a fresh devnet that has both departments, a citizen with an attested
/// name and a consent for tax to read it.
async fn demo_identity(dir: &Path, file: &DevnetFile) -> Option<crate::cmd::identity::DemoCitizen> {
    let has = |name: &str| file.nodes.iter().any(|node| node.name == name);
    if !has(DEMO_HOLDER) || !has(DEMO_READER) {
        return None;
    }
    match crate::cmd::identity::demo_citizen(dir, DEMO_HOLDER, DEMO_READER, DEMO_PURPOSE).await {
        Ok(citizen) => citizen,
        Err(err) => {
            eprintln!("warning: the demo citizen could not be set up: {err:#}");
            None
        }
    }
}

/// The departments that inspect, check fire safety and license in the
/// demo case (the devnet has no fire or commerce department).
const DEMO_CASE_DEPARTMENTS: [&str; 3] = ["health", "police", "tax"];

/// On a fresh devnet that has those departments, the "open a restaurant"
/// workflow, an officer per step and a case the demo citizen opened.
async fn demo_case(
    dir: &Path,
    file: &DevnetFile,
    citizen_key: &Path,
) -> Option<crate::cmd::approval::demo::DemoCase> {
    let has = |name: &str| file.nodes.iter().any(|node| node.name == name);
    if !DEMO_CASE_DEPARTMENTS.iter().all(|name| has(name)) {
        return None;
    }
    match crate::cmd::approval::demo::demo_case(dir, citizen_key, DEMO_CASE_DEPARTMENTS).await {
        Ok(case) => case,
        Err(err) => {
            eprintln!("warning: the demo case could not be set up: {err:#}");
            None
        }
    }
}

/// The department whose datasets the demo directory lists.
const DEMO_DIRECTORY_OWNER: &str = "health";

/// On a fresh devnet that has the owner, an open and a by-request dataset
/// with a data-sharing workflow.
async fn demo_directory(
    dir: &Path,
    file: &DevnetFile,
) -> Option<crate::cmd::directory::demo::DemoDirectory> {
    if !file
        .nodes
        .iter()
        .any(|node| node.name == DEMO_DIRECTORY_OWNER)
    {
        return None;
    }
    match crate::cmd::directory::demo::demo_directory(dir, DEMO_DIRECTORY_OWNER).await {
        Ok(directory) => directory,
        Err(err) => {
            eprintln!("warning: the demo directory could not be set up: {err:#}");
            None
        }
    }
}

/// On a fresh devnet with police, a pending governance proposal.
async fn demo_proposal(
    dir: &Path,
    file: &DevnetFile,
) -> Option<crate::cmd::governance::demo::DemoProposal> {
    let proposer = &file.nodes.first()?.name;
    match crate::cmd::governance::demo::demo_proposal(dir, proposer).await {
        Ok(proposal) => proposal,
        Err(err) => {
            eprintln!("warning: the demo governance proposal could not be made: {err:#}");
            None
        }
    }
}

fn print_demo_proposal(dir: &Path, proposal: &crate::cmd::governance::demo::DemoProposal) {
    let d = dir.display();
    println!(
        "demo proposal {} by {} ({}): pending until enough validators' departments sign it:",
        proposal.id, proposal.proposer, proposal.text
    );
    for signer in &proposal.signers {
        println!(
            "  govchain governance sign {} --dir {d} --department {signer} --signing-key {d}/certs/{signer}/signing.key",
            proposal.id
        );
    }
    println!(
        "  govchain governance list --dir {d}   # the set, the departments and the proposals\n"
    );
}

fn print_demo_directory(dir: &Path, directory: &crate::cmd::directory::demo::DemoDirectory) {
    use crate::cmd::directory::demo::{DEMO_BY_REQUEST_DATASET, DEMO_SHARING_STEP};
    let d = dir.display();
    println!(
        "demo directory: {}'s datasets, one open and one by request (steward key {}):",
        directory.owner,
        directory.steward_key_file.display()
    );
    println!("  govchain directory search --dir {d}");
    println!(
        "  govchain directory request {DEMO_BY_REQUEST_DATASET} --purpose planning --dir {d} --department tax --signing-key {d}/certs/tax/signing.key"
    );
    // Not a line of its own: the devnet test runs the demo case's
    // `govchain case approve` lines as printed.
    println!(
        "  # the case the request prints, approved by the steward: govchain case approve <case> --step {DEMO_SHARING_STEP} --signing-key {} --dir {d} --department {}",
        directory.steward_key_file.display(),
        directory.owner
    );
    println!("  govchain directory grants {DEMO_BY_REQUEST_DATASET} --dir {d}\n");
}

fn print_demo_case(dir: &Path, file: &DevnetFile, case: &crate::cmd::approval::demo::DemoCase) {
    let d = dir.display();
    println!();
    println!(
        "demo case {} (workflow {}: an automatic eligibility check, approved by its rule as the case opened, two inspections in parallel, then the licence); walk it to approved:",
        case.case_id,
        case.workflow_file.display()
    );
    for officer in &case.officers {
        println!(
            "  govchain case approve {} --step {} --signing-key {} --dir {d} --department {}   # {}'s {}",
            case.case_id,
            officer.step,
            officer.key_file.display(),
            officer.department,
            officer.department,
            officer.role
        );
    }
    println!(
        "  govchain case show {} --dir {d} --department {}",
        case.case_id, case.officers[0].department
    );
    println!(
        "  govchain case export {} --out case.json --dir {d} --department {}   # the evidence, then offline:",
        case.case_id, case.officers[0].department
    );
    println!("  govchain verify case.json --genesis {d}/certs/genesis.json");
    // The police officer reads the floor plan on the node that holds it.
    if let (Some(reader), Some(holder)) = (
        case.officers
            .iter()
            .find(|o| o.department != case.plan.holder),
        file.node(&case.plan.holder),
    ) {
        println!(
            "  govchain blob get {} --case {} --out plan.txt --dir {d} --department {} --node {} --server-name {}.node.govchain   # {}'s step may read the floor plan",
            case.plan.cid,
            case.case_id,
            reader.department,
            holder.url,
            case.plan.holder,
            reader.department
        );
    }
    println!(
        "  # a case whose applicant's name is not attested waits at eligibility; {}'s clerk settles it:\n  \
         # govchain case override CASE --step {} --approve --reason \"...\" --signing-key {} --dir {d} --department {}",
        case.clerk.department,
        case.clerk.step,
        case.clerk.key_file.display(),
        case.clerk.department
    );
}

fn print_demo_citizen(dir: &Path, citizen: &crate::cmd::identity::DemoCitizen) {
    let d = dir.display();
    println!();
    println!(
        "demo citizen: {} (key {}), name held and attested by {DEMO_HOLDER}, consent for {DEMO_READER}:",
        citizen.did,
        citizen.key_file.display()
    );
    println!(
        "  govchain identity show {} --key {} --dir {d}",
        citizen.did,
        citizen.key_file.display()
    );
    println!(
        "  govchain identity access --dir {d} --department {DEMO_READER} --signing-key {d}/certs/{DEMO_READER}/signing.key \\\n      --citizen {} --name name --consent {} --purpose {DEMO_PURPOSE} --out name.txt",
        citizen.did, citizen.consent_id
    );
    println!(
        "  govchain identity log --citizen {} --key {} --dir {d}",
        citizen.did,
        citizen.key_file.display()
    );
}

fn print_summary(
    dir: &Path,
    file: &DevnetFile,
    detach: bool,
    demo_citizen: Option<&crate::cmd::identity::DemoCitizen>,
    demo_case: Option<&crate::cmd::approval::demo::DemoCase>,
) {
    let d = dir.display();
    println!(
        "govchain devnet: chain {} with {} validators",
        file.chain_id,
        file.nodes.len()
    );
    println!();
    println!("  {:<12} {:<24} {:<32} log", "node", "address", "metrics");
    for node in &file.nodes {
        let log = dir.join(&node.config).with_file_name("node.log");
        let metrics = node.metrics_url.as_deref().unwrap_or("-");
        println!(
            "  {:<12} {:<24} {:<32} {}",
            node.name,
            node.url,
            metrics,
            log.display()
        );
    }
    println!();
    println!("web portal, in a browser that trusts {d}/certs/ca.crt (README: \"In the browser\"):");
    for node in &file.nodes {
        if let Some(url) = &node.portal_url {
            println!("  {:<12} {url}", node.name);
        }
    }
    println!(
        "  # log in (\"Log in\", or \"Officers\" with an officer's key), then answer as the device with the text under the QR code:"
    );
    println!(
        "  # govchain identity respond --key {d}/demo-citizen.key --dir {d} 'govchain-login:v1?...'"
    );
    println!();
    println!("certificates: {d}/certs (CA, and per department node, client and consensus keys)");
    println!("genesis:      {d}/certs/genesis.json");
    println!();
    println!("try, in another terminal:");
    if let Some(line) = path_hint() {
        println!("  {line}");
    }
    println!("  govchain status --dir {d}");
    println!("  govchain blocks follow --dir {d}");
    println!("  govchain block get --latest --dir {d}");
    println!("  govchain keys new --out me.key");
    println!(
        "  govchain record anchor README.md --dataset docs --record-id readme --signing-key me.key --wait --dir {d}"
    );
    println!("  govchain record verify README.md --dataset docs --record-id readme --dir {d}");
    let first = &file.nodes[0].name;
    println!(
        "  grpcurl -cacert {d}/certs/ca.crt -cert {d}/certs/{first}/client.crt -key {d}/certs/{first}/client.key {} list",
        file.nodes[0].url.trim_start_matches("https://")
    );
    if let Some(citizen) = demo_citizen {
        print_demo_citizen(dir, citizen);
    }
    if let Some(case) = demo_case {
        print_demo_case(dir, file, case);
    }
    println!();
    if detach {
        println!("the nodes run in the background; stop them with: govchain devnet stop --dir {d}");
    } else {
        println!("press Ctrl-C to stop the devnet (its data stays in {d}; run again to resume)");
    }
}

/// The line that puts this `govchain` on the PATH, when `govchain` there
/// is not this executable (after `make run`, it is in target/debug), so
/// that the commands printed after it run as printed.
fn path_hint() -> Option<String> {
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            dir.join("govchain")
                .canonicalize()
                .is_ok_and(|found| found == exe)
        })
    });
    if on_path {
        return None;
    }
    let dir = exe.parent()?;
    Some(format!(
        "export PATH=\"{}:$PATH\"   # puts this govchain on your PATH",
        dir.display()
    ))
}

/// Waits for Ctrl-C or SIGTERM, or for a node to exit, then stops them all.
async fn supervise(children: &mut [Child]) {
    let shutdown = crate::cmd::node::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some(i) = children.iter_mut().position(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                    eprintln!("node {i} exited; stopping the devnet (see its node.log)");
                    break;
                }
            }
        }
    }
    stop_children(children);
}

pub(crate) fn stop_children(children: &mut [Child]) {
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    terminate(&pids);
    for child in children.iter_mut() {
        let _ = child.wait();
    }
    eprintln!("devnet stopped");
}

/// SIGTERM, then SIGKILL for whoever is still there after [`STOP_TIMEOUT`].
fn terminate(pids: &[u32]) {
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while pids.iter().any(|pid| process_alive(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in pids.iter().filter(|pid| process_alive(**pid)) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

fn process_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn stop_detached(dir: &Path) -> anyhow::Result<()> {
    let mut file = DevnetFile::load(dir)?;
    let pids: Vec<u32> = file
        .nodes
        .iter()
        .filter_map(|n| n.pid)
        .filter(|pid| process_alive(*pid))
        .collect();
    if pids.is_empty() {
        println!("no node of the devnet in {} is running", dir.display());
    } else {
        terminate(&pids);
        println!("stopped {} nodes", pids.len());
    }
    for node in &mut file.nodes {
        node.pid = None;
    }
    file.save(dir)
}
