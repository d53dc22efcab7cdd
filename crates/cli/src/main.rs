//! The `govchain` command: runs a node or a local devnet, makes the
//! consortium's certificates and signing keys, and talks to nodes over gRPC
//! with mutual TLS to submit transactions, read blocks, anchor records, move
//! blobs and manage citizens' identities, consent and audited access.
//!
//! Exit codes follow ripgrep: 0 when the command did what was asked, 1 for a
//! negative answer (a record does not match its anchor, a transaction failed),
//! 2 for an error. Errors are one line on stderr that suggests a next step.
//!
//! No `unsafe` code, but for the glibc malloc calls of `malloc.rs` (which
//! says why).
#![deny(unsafe_code)]

mod case_bundle;
mod client;
mod cmd;
mod devnet_file;
mod envelope;
mod exit;
#[cfg(test)]
mod fake_node;
mod malloc;
mod output;
mod proof;
mod view;

use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use govchain_node::telemetry;

use exit::Negative;

#[derive(Debug, Parser)]
#[command(
    name = "govchain",
    version,
    about = "A consortium blockchain for government departments",
    long_about = "A consortium blockchain for government departments.\n\n\
        Each department runs a validator node; nodes order transactions with PBFT and \
        talk gRPC over mutual TLS. This one binary runs nodes, makes the consortium's \
        certificates and keys, and is the client for every node API.",
    after_help = "Quick start:\n  \
        govchain devnet --detach              # four local validators in ./devnet\n  \
        govchain status                       # ask every devnet node how it is doing\n  \
        echo hello > r.txt\n  \
        govchain keys new --out my.key\n  \
        govchain record anchor r.txt --dataset demo --record-id r1 --signing-key my.key --wait\n  \
        govchain record verify r.txt --dataset demo --record-id r1\n  \
        govchain identity create --key alice.key   # a citizen, as a did:key\n  \
        govchain blob cid photo.jpg               # a file's IPFS CID, offline\n\n\
        Exit codes: 0 ok, 1 negative answer (e.g. verification failed), 2 error.\n\
        Logging: GOVCHAIN_LOG (or RUST_LOG), e.g. GOVCHAIN_LOG=debug; structured:\n  \
        govchain --log-format json node --config nodes/tax/node.toml\n\
        Traces: set OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/gRPC), e.g.\n  \
        OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 govchain devnet"
)]
struct Cli {
    /// Print JSON instead of human-readable text.
    #[arg(long, global = true)]
    json: bool,

    /// Log lines on stderr as text (the default) or as JSON objects, which
    /// carry trace_id and span_id when OpenTelemetry traces are exported.
    #[arg(
        long,
        global = true,
        env = "GOVCHAIN_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text",
        value_parser = ["text", "json"]
    )]
    log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a validator node from its config file.
    Node(cmd::node::NodeArgs),
    /// Run a local consortium of validators for development.
    Devnet(cmd::devnet::DevnetArgs),
    /// Check a node's ledger files offline.
    Ledger(cmd::ledger::LedgerArgs),
    /// Validate a node's config (node.toml and GOVCHAIN_* overrides).
    Config(cmd::config::ConfigArgs),
    /// Make the consortium CA, department certificates and genesis.
    Certs(cmd::certs::CertsArgs),
    /// Assemble genesis from the departments' public parts.
    Genesis(cmd::genesis::GenesisArgs),
    /// Make and inspect Ed25519 transaction signing keys.
    Keys(cmd::keys::KeysArgs),
    /// Submit signed transactions and look them up.
    Tx(cmd::tx::TxArgs),
    /// Read one committed block.
    Block(cmd::block::BlockArgs),
    /// Follow committed blocks as they arrive.
    Blocks(cmd::blocks::BlocksArgs),
    /// Show each node's height, head, view, primary, mempool and peers.
    Status(cmd::status::StatusArgs),
    /// Anchor a record's SHA-256 on the chain, and verify a file against it.
    Record(cmd::record::RecordArgs),
    /// Upload, download and inspect content-addressed blobs; compute CIDs offline.
    Blob(cmd::blob::BlobArgs),
    /// Citizens' identities, attributes, attestations, consent, audited reads and QR login.
    #[command(
        long_about = "Citizens' digital identity. A citizen is an Ed25519 key, named by its \
            did:key; attribute values stay in a department node's blob store, sealed with a \
            salt, and the chain holds only their CIDs and salted commitments. Departments \
            attest attributes (as genesis or governance allows), citizens grant and revoke consent, and \
            every read of an attribute is recorded on chain before any byte is released.\n\n\
            Writes are signed transactions and wait for the commit by default (--no-wait \
            to skip).",
        after_help = "A walk through, on a devnet (`govchain devnet --detach`):\n  \
            govchain identity create --key alice.key\n  \
            govchain identity declare --key alice.key --name photo --file alice.jpg\n  \
            govchain identity attest --signing-key devnet/certs/civil/signing.key \\\n    \
            --department civil --citizen did:key:z6Mk... --name photo\n  \
            govchain identity consent grant --key alice.key --department tax \\\n    \
            --attributes photo --purpose benefit-check --expires 30d\n  \
            govchain identity access --signing-key devnet/certs/tax/signing.key --department tax \\\n    \
            --citizen did:key:z6Mk... --name photo --consent <id> --purpose benefit-check --out photo.jpg\n  \
            govchain identity log --citizen did:key:z6Mk... --key alice.key\n  \
            govchain identity show did:key:z6Mk... --key alice.key"
    )]
    Identity(cmd::identity::IdentityArgs),
    /// De-identify an export from a legacy system and anchor it as a new dataset version.
    #[command(
        long_about = INGEST_ABOUT,
        after_help = INGEST_EXAMPLE
    )]
    Ingest(cmd::ingest::IngestArgs),
    /// Register and revoke a department's officers (their keys and roles).
    Officer(cmd::approval::officer::OfficerArgs),
    /// Define cross-department approval workflows (versioned DAGs of steps).
    Workflow(cmd::approval::workflow::WorkflowArgs),
    /// Open cases, act on their steps as an officer, and follow them.
    #[command(
        long_about = "Paperless cross-department approvals. A case is an application against \
            a workflow version; officers registered by their departments approve, reject or \
            return its ready steps with signed transactions, and the chain refuses \
            out-of-order steps, wrong departments or roles, revoked officers, second \
            signatures, closed cases and late actions, each with its reason.",
        after_help = "A walk through (with a devnet, add --dir devnet --department <name>):\n  \
            govchain workflow define restaurant.toml --signing-key certs/commerce/signing.key\n  \
            govchain officer register --signing-key certs/fire/signing.key \\\n    \
            --officer <hex> --role inspector\n  \
            govchain case open --workflow open-restaurant --signing-key alice.key \\\n    \
            --document floor-plan=bafkrei...\n  \
            govchain case approve <case> --step fire-inspection --signing-key fire-officer.key\n  \
            govchain case list --waiting commerce\n  \
            govchain case show <case>\n  \
            govchain case export <case> --out bundle.json   # evidence, checked offline by:\n  \
            govchain verify bundle.json --genesis genesis.json"
    )]
    Case(cmd::approval::case::CaseArgs),
    /// Check a case's evidence bundle offline: signatures, proofs, certificates, replay.
    #[command(long_about = cmd::verify::LONG_ABOUT)]
    Verify(cmd::verify::VerifyArgs),
    /// The data resource directory: publish, search and request datasets.
    #[command(
        long_about = "The data resource directory. Each department publishes catalogue \
            entries for the data it shares (name, description, schema, sensitivity, update \
            frequency, access policy); `govchain ingest` appends de-identified versions. \
            An `open` dataset's version blobs are served by its owner's node to every \
            member; a `by-request` one only to departments whose access request (an \
            approval case against the owner's workflow) was approved.",
        after_help = "A walk through (with a devnet, add --dir devnet --department <name>):\n  \
            govchain directory search vaccination\n  \
            govchain directory show health/vaccinations\n  \
            govchain directory request health/vaccinations --purpose \"planning\" \\\n    \
            --signing-key certs/tax/signing.key\n  \
            govchain case approve <case> --step steward-review --signing-key steward.key\n  \
            govchain directory grants health/vaccinations"
    )]
    Directory(cmd::directory::DirectoryArgs),
    /// Change the validator set, departments and revocations by on-chain vote.
    #[command(
        long_about = "Change the consortium by on-chain vote of the validators in force. A \
            validator's department proposes adding a department's node (an observer being \
            promoted) or removing a validator, revoking a certificate, or changing a \
            department (a new signing key, new attest permissions, or a bureau joining); the \
            other validators' departments approve; once 2f+1 of the set in force approved it \
            before its deadline, the change takes effect from the next block. `govchain status` shows the set and the \
            pending proposals too.",
        after_help = "A walk through (with a devnet, add --dir devnet --department <name> \
            --signing-key devnet/certs/<name>/signing.key to each write):\n  \
            govchain governance propose add --candidate backup0 \\\n    \
            --consensus-key devnet/certs/backup0/consensus.key --endpoint 127.0.0.1:7054 \\\n    \
            --reason \"backup0 becomes a validator\"\n  \
            govchain governance sign <proposal>         # by two more departments\n  \
            govchain governance list"
    )]
    Governance(cmd::governance::GovernanceArgs),
    /// Back up a running node, and restore a node's data directory from a backup.
    Admin(cmd::admin::AdminArgs),
    /// Measure committed throughput and latency against the verification ceiling.
    Bench(cmd::bench::BenchArgs),
}

const INGEST_ABOUT: &str = "De-identify an export from a legacy system (CSV with a header, or \
    JSON Lines) and publish it as a new version of a dataset.\n\n\
    Each field goes through the rule the rules file gives it: drop; pseudonymise (HMAC-SHA-256 \
    under the department secret, so one value always gets one pseudonym and the secret never \
    leaves the department); generalise a date to its year or month; prefix (keep the first \
    characters, e.g. a postcode's district); band a number (age 34 -> 30-39); mask all but the \
    last characters; or keep. A field the rules do not name is refused, by name, unless the \
    rules set default = \"keep\" or \"drop\".\n\n\
    The export is streamed row by row (bounded memory for any size). A bad row (wrong number \
    of fields, a value its rule cannot take) is reported on stderr by line number, never with \
    its values, and skipped; with --strict the first one stops the ingest (exit 2). The \
    de-identified batch is uploaded to your node's blob store and anchored on chain as record \
    v<N> of dataset <department>/<NAME>: the record hash is the batch's SHA-256, and the schema \
    field holds `govchain-ingest/v1 cid=<CID> rows=<kept> skipped=<n> rules=<rules SHA-256> \
    k=<k>`. The rules hash covers the rules' meaning, not comments or layout.\n\n\
    --report prints the k-anonymity report: the smallest number of kept rows that share one \
    combination of the quasi_identifier columns (after their rules), and stores k with the \
    version. --dry-run only transforms and reports.";

const INGEST_EXAMPLE: &str = "Example rules.toml:\n  \
    [fields.name]\n  action = \"drop\"\n  \
    [fields.national_id]\n  action = \"pseudonymise\"\n  \
    [fields.date_of_birth]\n  action = \"generalise\"\n  to = \"year\"\n  quasi_identifier = true\n  \
    [fields.postcode]\n  action = \"prefix\"\n  keep = 3\n  quasi_identifier = true\n  \
    [fields.age]\n  action = \"band\"\n  width = 10\n  \
    [fields.phone]\n  action = \"mask\"\n  keep_last = 2\n  \
    [fields.diagnosis]\n  action = \"keep\"\n\n\
    Then:\n  \
    govchain ingest --new-secret health.secret      # once per department; keep it safe\n  \
    govchain ingest records.csv --rules rules.toml --secret-file health.secret --dry-run --report\n  \
    govchain ingest records.csv --rules rules.toml --secret-file health.secret --report \\\n    \
    --dataset benefits --signing-key devnet/certs/health/signing.key --department health --dir devnet\n  \
    govchain record verify batch.csv --dataset health/benefits --record-id v1 --dir devnet";

impl Command {
    /// Servers log their state transitions; client commands stay quiet unless
    /// something is wrong, so that their output is just the answer.
    fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Node(_) | Command::Devnet(_) => "info",
            _ => "warn",
        }
    }

    /// The node's department, for `service.instance.id` on its spans.
    fn instance(&self) -> Option<String> {
        match self {
            Command::Node(args) => govchain_node::NodeFile::load(&args.config)
                .ok()
                .map(|file| file.name),
            _ => None,
        }
    }
}

/// How long blocking tasks may run on after the command finished.
const RUNTIME_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> ExitCode {
    // Before any thread or buffer exists.
    let tuning = malloc::tune();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            return exit_code(Err(
                anyhow::Error::new(err).context("cannot start the async runtime")
            ));
        }
    };
    // The OTLP exporter's connection lives on this runtime.
    let telemetry = {
        let _runtime = runtime.enter();
        let format = cli.log_format.parse().unwrap_or_default();
        telemetry::init(
            format,
            cli.command.default_log_filter(),
            cli.command.instance().as_deref(),
        )
    };
    tracing::debug!(?tuning, "malloc thresholds");
    let result = runtime.block_on(run(cli));
    // Spans still buffered go out while the runtime can still carry them.
    telemetry.shutdown();
    // A node that stops on a fatal error does not wait for blocking work
    // of the part that failed.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    exit_code(result)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Node(args) => cmd::node::run(args).await,
        Command::Devnet(args) => cmd::devnet::run(args).await,
        Command::Ledger(args) => cmd::ledger::run(args, json),
        Command::Config(args) => cmd::config::run(args, json),
        Command::Certs(args) => cmd::certs::run(args, json),
        Command::Genesis(args) => cmd::genesis::run(args, json),
        Command::Keys(args) => cmd::keys::run(args, json),
        Command::Tx(args) => cmd::tx::run(args, json).await,
        Command::Block(args) => cmd::block::run(args, json).await,
        Command::Blocks(args) => cmd::blocks::run(args, json).await,
        Command::Status(args) => cmd::status::run(args, json).await,
        Command::Record(args) => cmd::record::run(args, json).await,
        Command::Blob(args) => cmd::blob::run(args, json).await,
        Command::Identity(args) => cmd::identity::run(args, json).await,
        Command::Ingest(args) => cmd::ingest::run(args, json).await,
        Command::Officer(args) => cmd::approval::officer::run(args, json).await,
        Command::Workflow(args) => cmd::approval::workflow::run(args, json).await,
        Command::Case(args) => cmd::approval::case::run(args, json).await,
        Command::Verify(args) => cmd::verify::run(args, json),
        Command::Directory(args) => cmd::directory::run(args, json).await,
        Command::Governance(args) => cmd::governance::run(args, json).await,
        Command::Bench(args) => cmd::bench::run(args, json).await,
        Command::Admin(args) => cmd::admin::run(args, json).await,
    }
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    let Err(err) = result else {
        return ExitCode::SUCCESS;
    };
    if let Some(negative) = err.downcast_ref::<Negative>() {
        if let Some(message) = negative.message() {
            eprintln!("{message}");
        }
        return ExitCode::from(1);
    }
    // A closed pipe (`govchain blocks follow | head`) is the reader's choice,
    // not an error.
    if err
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|cause| cause.kind() == io::ErrorKind::BrokenPipe)
    {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {}", output::one_line(&format!("{err:#}")));
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_is_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from(["govchain", "status", "--json", "--dir", "devnet"])
            .expect("parses");
        assert!(cli.json);
    }

    #[test]
    fn bench_json_takes_a_file_as_the_issue_spells_it() {
        let cli = Cli::try_parse_from([
            "govchain",
            "bench",
            "--duration",
            "5s",
            "--json",
            "out.json",
        ])
        .expect("parses");
        assert!(cli.json);
        let Command::Bench(args) = cli.command else {
            panic!("not bench: {:?}", cli.command);
        };
        assert_eq!(args.json_file, Some(std::path::PathBuf::from("out.json")));
    }

    #[test]
    fn log_format_is_global_and_only_text_or_json() {
        let cli =
            Cli::try_parse_from(["govchain", "status", "--log-format", "json"]).expect("parses");
        assert_eq!(
            cli.log_format.parse::<telemetry::LogFormat>().ok(),
            Some(telemetry::LogFormat::Json)
        );
        let err = Cli::try_parse_from(["govchain", "--log-format", "yaml", "status"])
            .expect_err("refused");
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn a_negative_answer_exits_1_and_an_error_exits_2() {
        assert_eq!(exit_code(Ok(())), ExitCode::SUCCESS);
        assert_eq!(exit_code(Err(Negative::quiet().into())), ExitCode::from(1));
        assert_eq!(exit_code(Err(anyhow::anyhow!("boom"))), ExitCode::from(2));
    }
}
