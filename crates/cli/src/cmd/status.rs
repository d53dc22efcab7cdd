//! `govchain status`: each node's view of the chain.

use clap::Args;
use govchain_proto::node::v1::{
    GetStatusRequest, GetStatusResponse, GetValidatorSetRequest, GetValidatorSetResponse,
};
use govchain_proto::types::v1::ProposalStatus;
use serde::Serialize;

use crate::client::{self, ConnectArgs, Target, rpc_error};
use crate::output::{self, Fields, Table, time_or_dash};

#[derive(Debug, Args)]
#[command(
    long_about = "Show each node's view of the chain: height, head hash, view, primary, \
        mempool and connected peers. With --dir (or a ./devnet directory), asks every \
        devnet node; with --node, just that one. A node that does not answer is shown with \
        its error; the command fails (exit 2) only if no node answers.",
    after_help = "Examples:\n  \
        govchain status                        # every node of ./devnet\n  \
        govchain status --dir devnet --json\n  \
        govchain status --node https://10.0.0.5:7050 --ca ca.crt --cert client.crt --key client.key"
)]
pub struct StatusArgs {
    /// Ask every node in devnet.json (the default with --dir unless --node is
    /// given).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// One node's answer, or why there is none. The `--json` format is
/// `{"nodes": [NodeStatus, ...]}`.
#[derive(Debug, Default, Serialize)]
struct NodeStatus {
    node: Option<String>,
    url: String,
    chain_id: Option<String>,
    height: Option<u64>,
    head_hash: Option<String>,
    head_timestamp_ms: Option<u64>,
    state_root: Option<String>,
    genesis_hash: Option<String>,
    view: Option<u64>,
    primary: Option<String>,
    validator_count: Option<u32>,
    /// The validator set in force for the next block, `index=department`
    /// each (governance changes it; see `govchain governance list`).
    validators: Option<Vec<String>>,
    /// Approvals a validator proposal needs (2f+1 of `validators`).
    quorum: Option<u32>,
    /// Validator proposals still collecting approvals (before their deadline).
    pending_proposals: Option<Vec<String>>,
    mempool_transactions: Option<u64>,
    mempool_bytes: Option<u64>,
    connected_peers: Option<Vec<String>>,
    /// True while the node starts or catches up with its peers (its gRPC
    /// health is NOT_SERVING meanwhile).
    syncing: Option<bool>,
    /// Where the node serves Prometheus metrics; null when it does not.
    metrics_url: Option<String>,
    /// Where the node serves the web portal; null when it does not.
    portal_url: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct StatusView {
    nodes: Vec<NodeStatus>,
}

impl NodeStatus {
    fn answered(
        target: &Target,
        status: GetStatusResponse,
        set: Option<GetValidatorSetResponse>,
    ) -> Self {
        let now_ms = crate::cmd::identity::now_ms();
        let validators = set.as_ref().map(|set| {
            set.validators
                .iter()
                .flat_map(|v| &v.members)
                .map(|m| format!("{}={}", m.index, m.department))
                .collect()
        });
        let pending_proposals = set.as_ref().map(|set| {
            set.proposals
                .iter()
                .filter(|p| {
                    p.status() == ProposalStatus::Pending
                        && p.proposal.as_ref().is_some_and(|p| p.deadline_ms >= now_ms)
                })
                .map(|p| {
                    format!(
                        "{} ({}, {} approvals)",
                        hex::encode(&p.id),
                        crate::view::change_text(
                            p.proposal.as_ref().and_then(|p| p.change.as_ref())
                        ),
                        p.approvals.len()
                    )
                })
                .collect()
        });
        Self {
            validators,
            quorum: set.as_ref().map(|set| set.quorum),
            pending_proposals,
            node: Some(status.node.clone())
                .filter(|name| !name.is_empty())
                .or_else(|| target.name.clone()),
            url: target.url.clone(),
            chain_id: Some(status.chain_id),
            height: Some(status.height),
            head_hash: Some(hex::encode(&status.head_hash)),
            head_timestamp_ms: Some(status.head_timestamp_ms),
            state_root: Some(hex::encode(&status.state_root)),
            genesis_hash: Some(hex::encode(&status.genesis_hash)),
            view: Some(status.view),
            primary: Some(status.primary),
            validator_count: Some(status.validator_count),
            mempool_transactions: Some(status.mempool_transactions),
            mempool_bytes: Some(status.mempool_bytes),
            connected_peers: Some(status.connected_peers),
            syncing: Some(status.syncing),
            metrics_url: Some(status.metrics_url).filter(|url| !url.is_empty()),
            portal_url: Some(status.portal_url).filter(|url| !url.is_empty()),
            error: None,
        }
    }

    fn failed(target: &Target, err: &anyhow::Error) -> Self {
        Self {
            node: target.name.clone(),
            url: target.url.clone(),
            error: Some(output::one_line(&format!("{err:#}"))),
            ..Self::default()
        }
    }

    fn name(&self) -> &str {
        self.node.as_deref().unwrap_or("-")
    }
}

pub async fn run(args: StatusArgs, json: bool) -> anyhow::Result<()> {
    let targets = if args.all || args.connect.node.is_none() {
        args.connect.all_targets()?
    } else {
        vec![args.connect.target()?]
    };
    // Ask every node at once, so that one slow node delays the answer by its
    // own timeout, not by the sum of all of them.
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|target| tokio::spawn(query(target)))
        .collect();
    let mut nodes = Vec::with_capacity(tasks.len());
    for task in tasks {
        nodes.push(task.await?);
    }
    let view = StatusView { nodes };
    if json {
        output::print_json(&view)?;
    } else {
        output::print(&render(&view.nodes))?;
    }
    anyhow::ensure!(
        view.nodes.iter().any(|node| node.error.is_none()),
        "no node answered; is the devnet running? try `govchain devnet`"
    );
    Ok(())
}

async fn query(target: Target) -> NodeStatus {
    let answer = async {
        let mut client = client::connect(&target).await?;
        let status = client
            .get_status(GetStatusRequest {})
            .await
            .map_err(rpc_error)?
            .into_inner();
        // The latest proposals only: a status is a glance.
        let set = client
            .get_validator_set(GetValidatorSetRequest {
                proposals_after: 0,
                proposals_limit: 0,
                prove_departments: false,
            })
            .await
            .ok()
            .map(tonic::Response::into_inner);
        anyhow::Ok((status, set))
    };
    match answer.await {
        Ok((status, set)) => NodeStatus::answered(&target, status, set),
        Err(err) => NodeStatus::failed(&target, &err),
    }
}

fn render(nodes: &[NodeStatus]) -> String {
    match nodes {
        [node] if node.error.is_none() => render_one(node),
        _ => render_table(nodes),
    }
}

fn render_one(node: &NodeStatus) -> String {
    let text = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    let number = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let peers = node.connected_peers.clone().unwrap_or_default();
    let mut fields = Fields::new();
    fields
        .add("node", node.name())
        .add("url", &node.url)
        .add("chain id", text(&node.chain_id))
        .add(
            "height",
            if node.syncing == Some(true) {
                format!(
                    "{} (syncing: catching up with its peers)",
                    number(node.height)
                )
            } else {
                number(node.height)
            },
        )
        .add("head hash", text(&node.head_hash))
        .add(
            "head time",
            time_or_dash(node.head_timestamp_ms.unwrap_or(0)),
        )
        .add("state root", text(&node.state_root))
        .add("genesis hash", text(&node.genesis_hash))
        .add("view", number(node.view))
        .add("primary", text(&node.primary))
        .add(
            "validators",
            match (&node.validators, node.quorum) {
                (Some(members), Some(quorum)) => format!(
                    "{} ({}), a quorum is {quorum}",
                    members.len(),
                    members.join(", ")
                ),
                _ => node
                    .validator_count
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            },
        )
        .add(
            "proposals",
            match &node.pending_proposals {
                Some(pending) if !pending.is_empty() => format!("pending: {}", pending.join("; ")),
                Some(_) => "none pending".to_owned(),
                None => "-".to_owned(),
            },
        )
        .add(
            "mempool",
            format!(
                "{} transactions, {} bytes",
                number(node.mempool_transactions),
                number(node.mempool_bytes)
            ),
        )
        .add("peers", peers_text(&peers));
    fields.render()
}

fn peers_text(peers: &[String]) -> String {
    if peers.is_empty() {
        "none".to_owned()
    } else {
        peers.join(", ")
    }
}

fn render_table(nodes: &[NodeStatus]) -> String {
    let mut table = Table::new(&[
        "NODE", "URL", "HEIGHT", "HEAD", "VIEW", "PRIMARY", "MEMPOOL", "PEERS",
    ]);
    let mut errors = Vec::new();
    for node in nodes {
        if let Some(error) = &node.error {
            table.add(vec![
                node.name().to_owned(),
                node.url.clone(),
                "down".to_owned(),
            ]);
            errors.push(format!("{}: {error}", node.name()));
            continue;
        }
        let head = node
            .head_hash
            .as_deref()
            .filter(|hash| !hash.is_empty())
            .map_or("-", |hash| hash.get(..8).unwrap_or(hash));
        let height = node.height.unwrap_or(0).to_string();
        table.add(vec![
            node.name().to_owned(),
            node.url.clone(),
            if node.syncing == Some(true) {
                format!("{height} syncing")
            } else {
                height
            },
            head.to_owned(),
            node.view.unwrap_or(0).to_string(),
            node.primary.clone().unwrap_or_default(),
            node.mempool_transactions.unwrap_or(0).to_string(),
            peers_text(node.connected_peers.as_deref().unwrap_or_default()),
        ]);
    }
    let mut text = table.render();
    for error in errors {
        text.push('\n');
        text.push_str(&error);
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn target(name: &str, port: u16) -> Target {
        Target {
            name: Some(name.into()),
            url: format!("https://127.0.0.1:{port}"),
            ca: PathBuf::from("ca.crt"),
            cert: PathBuf::from("client.crt"),
            key: PathBuf::from("client.key"),
            server_name: None,
        }
    }

    fn health() -> NodeStatus {
        NodeStatus::answered(
            &target("health", 7050),
            GetStatusResponse {
                chain_id: "govchain-devnet".into(),
                node: "health".into(),
                height: 12,
                head_hash: vec![0xab; 32],
                state_root: vec![0xcd; 32],
                genesis_hash: vec![0xef; 32],
                view: 0,
                primary: "health".into(),
                validator_count: 4,
                mempool_transactions: 3,
                mempool_bytes: 900,
                connected_peers: vec!["tax".into(), "education".into()],
                head_timestamp_ms: 0,
                observer: false,
                view_active: true,
                rejected_messages: 0,
                syncing: false,
                metrics_url: "http://127.0.0.1:9464/metrics".into(),
                portal_url: "https://127.0.0.1:8443/".into(),
            },
            None,
        )
    }

    fn down() -> NodeStatus {
        NodeStatus::failed(
            &target("tax", 7051),
            &anyhow::anyhow!("cannot reach node at https://127.0.0.1:7051: connection refused"),
        )
    }

    #[test]
    fn json_has_the_documented_shape() {
        let view = StatusView {
            nodes: vec![health(), down()],
        };
        let json = serde_json::to_value(&view).expect("json");
        let first = &json["nodes"][0];
        assert_eq!(first["node"], "health");
        assert_eq!(first["height"], 12);
        assert_eq!(first["head_hash"], "ab".repeat(32));
        assert_eq!(first["connected_peers"][1], "education");
        assert_eq!(first["syncing"], false);
        assert_eq!(first["metrics_url"], "http://127.0.0.1:9464/metrics");
        assert_eq!(first["portal_url"], "https://127.0.0.1:8443/");
        assert!(first["error"].is_null());
        let second = &json["nodes"][1];
        assert_eq!(second["node"], "tax");
        assert!(second["height"].is_null());
        assert!(second["metrics_url"].is_null());
        assert!(second["portal_url"].is_null());
        assert!(
            second["error"]
                .as_str()
                .is_some_and(|e| e.contains("refused"))
        );
    }

    #[test]
    fn many_nodes_render_as_a_table_with_errors_below() {
        let text = render(&[health(), down()]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NODE    URL"), "{text}");
        assert!(
            lines[1].contains("12      abababab  0     health   3        tax, education"),
            "{text}"
        );
        assert!(lines[2].ends_with("down"), "{text}");
        assert!(lines[3].starts_with("tax: cannot reach node"), "{text}");
    }

    #[test]
    fn one_node_renders_as_fields() {
        let text = render(&[health()]);
        assert!(
            text.contains("mempool:      3 transactions, 900 bytes"),
            "{text}"
        );
        assert!(text.contains("head time:    -"), "{text}");
        assert!(text.contains("height:       12\n"), "{text}");
    }

    #[test]
    fn the_validator_set_and_pending_proposals_are_shown() {
        use govchain_proto::types::v1::{
            ProposeValidatorChange, RemoveValidator, ValidatorChange, ValidatorMember,
            ValidatorProposal, ValidatorSetRecord, validator_change::Change,
        };
        let member = |index: u32, department: &str| ValidatorMember {
            index,
            department: department.into(),
            ..Default::default()
        };
        let pending = ValidatorProposal {
            id: vec![0xab; 32],
            proposal: Some(ProposeValidatorChange {
                change: Some(ValidatorChange {
                    change: Some(Change::Remove(RemoveValidator { validator_index: 1 })),
                }),
                deadline_ms: u64::MAX,
                reason: "r".into(),
            }),
            status: ProposalStatus::Pending.into(),
            approvals: vec!["health".into()],
            ..Default::default()
        };
        let expired = ValidatorProposal {
            proposal: Some(ProposeValidatorChange {
                deadline_ms: 1,
                ..pending.proposal.clone().expect("a proposal")
            }),
            ..pending.clone()
        };
        let set = GetValidatorSetResponse {
            validators: Some(ValidatorSetRecord {
                members: vec![member(0, "health"), member(1, "tax"), member(4, "backup0")],
                since_height: 9,
                next_index: 5,
                change_heights: vec![8],
            }),
            proposals: vec![pending, expired],
            next_proposals_after: 0,
            height: 12,
            quorum: 3,
            revocations: Vec::new(),
            departments: Vec::new(),
            departments_state: Vec::new(),
            departments_proof: None,
        };
        let mut node = health();
        let fresh = NodeStatus::answered(
            &target("health", 7050),
            GetStatusResponse::default(),
            Some(set),
        );
        node.validators = fresh.validators;
        node.quorum = fresh.quorum;
        node.pending_proposals = fresh.pending_proposals;
        let text = render(&[node]);
        assert!(
            text.contains("validators:   3 (0=health, 1=tax, 4=backup0), a quorum is 3"),
            "{text}"
        );
        // The expired one is left out.
        let line = text
            .lines()
            .find(|l| l.starts_with("proposals:"))
            .expect("a line");
        assert_eq!(line.matches("remove validator 1").count(), 1, "{text}");
        assert!(line.contains("1 approvals"), "{text}");
        // Without the RPC (an older node), the count alone.
        assert!(render(&[health()]).contains("validators:   4\n"));
    }

    #[test]
    fn a_syncing_node_says_so_beside_its_height() {
        let mut node = health();
        node.syncing = Some(true);
        assert!(render(&[node]).contains("height:       12 (syncing: catching up with its peers)"),);
        let mut node = health();
        node.syncing = Some(true);
        let table = render(&[node, down()]);
        assert!(
            table
                .lines()
                .nth(1)
                .is_some_and(|l| l.contains("12 syncing")),
            "{table}"
        );
    }
}
