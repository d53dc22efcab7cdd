//! A fake node for tests: the real `NodeService` API over real mutual TLS,
//! with certificates from `govchain_pki::init_consortium` and a devnet.json,
//! but a toy chain that commits each transaction in a block of its own as
//! soon as it is submitted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use govchain_crypto::Digest;
use govchain_pki::{DepartmentFiles, InitOptions};
use govchain_proto::node::v1::node_service_server::{NodeService, NodeServiceServer};
use govchain_proto::node::v1::{
    CommitStatusRequest, CommitStatusResponse, GetAccountRequest, GetAccountResponse,
    GetAnchorRequest, GetAnchorResponse, GetBlockRequest, GetBlockResponse, GetStatusRequest,
    GetStatusResponse, GetTransactionRequest, GetTransactionResponse, SubmitResult,
    SubmitTransactionAndWaitRequest, SubmitTransactionAndWaitResponse, SubmitTransactionRequest,
    SubmitTransactionResponse, SubmitTransactionStreamRequest, SubmitTransactionStreamResponse,
    SubmitTransactionsRequest, SubmitTransactionsResponse, SubscribeBlocksRequest,
    SubscribeBlocksResponse, TransactionStatus,
};
use govchain_proto::types::v1::{
    AnchoredRecord, ErrorReason, TransactionEnvelope, TransactionOutcome, TransactionResult,
    transaction::Body,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::cmd::block::tests::committed_block;
use crate::devnet_file::{DevnetFile, DevnetNode};

pub const CHAIN: &str = "govchain-test";

#[derive(Default)]
struct Chain {
    height: u64,
    /// Transaction id → (height, result, envelope).
    transactions: BTreeMap<Vec<u8>, GetTransactionResponse>,
    anchors: BTreeMap<(String, String), AnchoredRecord>,
    nonces: BTreeMap<Vec<u8>, u64>,
}

#[derive(Clone, Default)]
pub struct FakeNode {
    chain: Arc<Mutex<Chain>>,
}

impl FakeNode {
    fn chain(&self) -> Result<std::sync::MutexGuard<'_, Chain>, Status> {
        self.chain.lock().map_err(|_| Status::internal("poisoned"))
    }
}

impl FakeNode {
    /// Executes an anchor at once, as a block of its own; returns its id.
    fn submit_one(&self, envelope: TransactionEnvelope) -> Result<Vec<u8>, Status> {
        let verified = govchain_exec::check_envelope(envelope, CHAIN, 65536, |_, _| false)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        let mut chain = self.chain()?;
        let signer = verified.signer.as_bytes().to_vec();
        let committed = chain.nonces.get(&signer).copied().unwrap_or(0);
        if verified.nonce != committed + 1 {
            return Err(Status::failed_precondition(format!(
                "nonce {} is not {}",
                verified.nonce,
                committed + 1
            )));
        }
        chain.nonces.insert(signer.clone(), verified.nonce);
        chain.height += 1;
        let height = chain.height;
        let Body::AnchorRecord(record) = verified.body else {
            return Err(Status::unimplemented(
                "the fake node executes anchor records only",
            ));
        };
        let key = (record.dataset.clone(), record.record_id.clone());
        let result = match chain.anchors.get(&key) {
            Some(previous) if previous.signer != signer => TransactionResult {
                outcome: TransactionOutcome::Failed.into(),
                error: "only the first signer may anchor new versions".into(),
                reason: ErrorReason::PermissionDenied.into(),
            },
            previous => {
                let version = previous.map_or(1, |previous| previous.version + 1);
                chain.anchors.insert(
                    key,
                    AnchoredRecord {
                        record: Some(record),
                        signer,
                        version,
                        block_height: height,
                        transaction_id: verified.id.to_vec(),
                        // The toy chain has no genesis departments.
                        department: String::new(),
                    },
                );
                TransactionResult {
                    outcome: TransactionOutcome::Success.into(),
                    error: String::new(),
                    ..Default::default()
                }
            }
        };
        chain.transactions.insert(
            verified.id.to_vec(),
            GetTransactionResponse {
                transaction_id: verified.id.to_vec(),
                status: TransactionStatus::Committed.into(),
                block_height: height,
                block_hash: Digest::sha256(&height.to_be_bytes()).to_vec(),
                index: 0,
                result: Some(result),
                envelope: Some(verified.envelope),
                ..Default::default()
            },
        );
        Ok(verified.id.to_vec())
    }
}

#[tonic::async_trait]
impl NodeService for FakeNode {
    async fn submit_transaction(
        &self,
        request: Request<SubmitTransactionRequest>,
    ) -> Result<Response<SubmitTransactionResponse>, Status> {
        let envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("no envelope"))?;
        Ok(Response::new(SubmitTransactionResponse {
            transaction_id: self.submit_one(envelope)?,
        }))
    }

    async fn submit_transactions(
        &self,
        request: Request<SubmitTransactionsRequest>,
    ) -> Result<Response<SubmitTransactionsResponse>, Status> {
        let results = request
            .into_inner()
            .envelopes
            .into_iter()
            .map(|envelope| {
                let id = govchain_exec::transaction_id(
                    &envelope.chain_id,
                    &envelope.signer,
                    envelope.nonce,
                    &envelope.payload,
                );
                match self.submit_one(envelope) {
                    Ok(_) => SubmitResult {
                        transaction_id: id.to_vec(),
                        code: 0,
                        message: String::new(),
                        reason: 0,
                    },
                    Err(status) => SubmitResult {
                        transaction_id: id.to_vec(),
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                        reason: 0,
                    },
                }
            })
            .collect();
        Ok(Response::new(SubmitTransactionsResponse { results }))
    }

    type SubmitTransactionStreamStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<SubmitTransactionStreamResponse, Status>>>;

    async fn submit_transaction_stream(
        &self,
        _request: Request<tonic::Streaming<SubmitTransactionStreamRequest>>,
    ) -> Result<Response<Self::SubmitTransactionStreamStream>, Status> {
        Err(Status::unimplemented("the fake node takes no feeds"))
    }

    /// The toy chain commits at submission, so the wait is over at once.
    async fn submit_transaction_and_wait(
        &self,
        request: Request<SubmitTransactionAndWaitRequest>,
    ) -> Result<Response<SubmitTransactionAndWaitResponse>, Status> {
        let envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("no envelope"))?;
        let id = self.submit_one(envelope)?;
        let transaction = self.chain()?.transactions.get(&id).cloned();
        Ok(Response::new(SubmitTransactionAndWaitResponse {
            transaction,
        }))
    }

    type CommitStatusStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<CommitStatusResponse, Status>>>;

    /// Known transactions at once; an unknown one ends the stream as a
    /// missed deadline would.
    async fn get_validator_set(
        &self,
        _request: Request<govchain_proto::node::v1::GetValidatorSetRequest>,
    ) -> Result<Response<govchain_proto::node::v1::GetValidatorSetResponse>, Status> {
        Err(Status::unimplemented(
            "the fake node keeps no validator set",
        ))
    }

    async fn commit_status(
        &self,
        request: Request<CommitStatusRequest>,
    ) -> Result<Response<Self::CommitStatusStream>, Status> {
        let chain = self.chain()?;
        let answers = request
            .into_inner()
            .transaction_ids
            .iter()
            .map(|id| {
                chain
                    .transactions
                    .get(id)
                    .cloned()
                    .map(|transaction| CommitStatusResponse {
                        transaction: Some(transaction),
                    })
                    .ok_or_else(|| Status::deadline_exceeded("not committed on the fake node"))
            })
            .collect::<Vec<_>>();
        Ok(Response::new(tokio_stream::iter(answers)))
    }

    async fn get_transaction(
        &self,
        request: Request<GetTransactionRequest>,
    ) -> Result<Response<GetTransactionResponse>, Status> {
        let id = request.into_inner().transaction_id;
        self.chain()?
            .transactions
            .get(&id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such transaction"))
    }

    async fn get_block(
        &self,
        _request: Request<GetBlockRequest>,
    ) -> Result<Response<GetBlockResponse>, Status> {
        Ok(Response::new(GetBlockResponse {
            block: Some(committed_block()),
        }))
    }

    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let chain = self.chain()?;
        Ok(Response::new(GetStatusResponse {
            chain_id: CHAIN.into(),
            node: "health".into(),
            height: chain.height,
            head_hash: vec![1; 32],
            primary: "health".into(),
            validator_count: 2,
            ..GetStatusResponse::default()
        }))
    }

    async fn list_anchors(
        &self,
        _request: Request<govchain_proto::node::v1::ListAnchorsRequest>,
    ) -> Result<Response<govchain_proto::node::v1::ListAnchorsResponse>, Status> {
        Err(Status::unimplemented("the fake node keeps no listings"))
    }

    async fn list_transactions(
        &self,
        _request: Request<govchain_proto::node::v1::ListTransactionsRequest>,
    ) -> Result<Response<govchain_proto::node::v1::ListTransactionsResponse>, Status> {
        Err(Status::unimplemented("the fake node keeps no listings"))
    }

    type SubscribeTransactionsStream = tokio_stream::Iter<
        std::vec::IntoIter<Result<govchain_proto::node::v1::SubscribeTransactionsResponse, Status>>,
    >;

    /// The toy chain keeps no event index: refused, as an old node would.
    async fn subscribe_transactions(
        &self,
        _request: Request<govchain_proto::node::v1::SubscribeTransactionsRequest>,
    ) -> Result<Response<Self::SubscribeTransactionsStream>, Status> {
        Err(Status::unimplemented(
            "the fake node does not follow transactions",
        ))
    }

    type SubscribeBlocksStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<SubscribeBlocksResponse, Status>>>;

    /// Two blocks, then the end of the stream.
    async fn subscribe_blocks(
        &self,
        _request: Request<SubscribeBlocksRequest>,
    ) -> Result<Response<Self::SubscribeBlocksStream>, Status> {
        let message = || {
            Ok(SubscribeBlocksResponse {
                block: Some(committed_block()),
            })
        };
        Ok(Response::new(tokio_stream::iter(vec![
            message(),
            message(),
        ])))
    }

    async fn get_account(
        &self,
        request: Request<GetAccountRequest>,
    ) -> Result<Response<GetAccountResponse>, Status> {
        let key = request.into_inner().public_key;
        let nonce = self.chain()?.nonces.get(&key).copied().unwrap_or(0);
        Ok(Response::new(GetAccountResponse {
            committed_nonce: nonce,
            pending_nonce: nonce,
            next_nonce: nonce + 1,
            parked: 0,
            proof: None,
        }))
    }

    async fn get_anchor(
        &self,
        request: Request<GetAnchorRequest>,
    ) -> Result<Response<GetAnchorResponse>, Status> {
        let request = request.into_inner();
        self.chain()?
            .anchors
            .get(&(request.dataset, request.record_id))
            .cloned()
            .map(|anchored| {
                Response::new(GetAnchorResponse {
                    anchored: Some(anchored),
                    proof: None,
                    anchored_bytes: Vec::new(),
                    anchoring_proof: None,
                })
            })
            .ok_or_else(|| Status::not_found("record is not anchored"))
    }
}

/// Makes a consortium (health, tax) in `dir/certs`, serves a fake `health`
/// node on a free loopback port, and writes `dir/devnet.json` listing it and
/// a `tax` node at `down_url` where nothing listens.
pub async fn start(dir: &Path, down_url: &str) -> SocketAddr {
    let certs = dir.join("certs");
    govchain_pki::init_consortium(&InitOptions {
        observers: Vec::new(),
        out: certs.clone(),
        chain_id: CHAIN.into(),
        departments: vec!["health".into(), "tax".into()],
        hosts: Vec::new(),
        force: false,
        attests: Vec::new(),
    })
    .expect("init consortium");
    let files = DepartmentFiles::new(&certs, "health");
    let read = |path: &Path| std::fs::read_to_string(path).expect("read pem");
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(&files.node_certificate),
            read(&files.node_key),
        ))
        .client_ca_root(Certificate::from_pem(read(&files.ca_certificate)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = Server::builder()
        .tls_config(tls)
        .expect("server tls")
        .add_service(NodeServiceServer::new(FakeNode::default()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    let node = |name: &str, url: String| DevnetNode {
        name: name.into(),
        url,
        data_dir: format!("nodes/{name}").into(),
        config: format!("nodes/{name}/node.toml").into(),
        pid: None,
        metrics_url: None,
        portal_url: None,
    };
    DevnetFile {
        chain_id: CHAIN.into(),
        genesis: "certs/genesis.json".into(),
        certs: "certs".into(),
        nodes: vec![
            node("health", format!("https://{address}")),
            node("tax", down_url.to_owned()),
        ],
    }
    .save(dir)
    .expect("save devnet.json");
    address
}

/// Whole commands, parsed from a command line as a user would type them,
/// against the fake node.
#[cfg(test)]
mod tests {
    use std::process::ExitCode;

    use clap::Parser as _;

    use super::*;
    use crate::client::{ConnectArgs, connect};
    use crate::{Cli, exit_code, run};

    async fn govchain(args: &[&str]) -> ExitCode {
        let cli = Cli::try_parse_from(std::iter::once("govchain").chain(args.iter().copied()))
            .expect("parses");
        exit_code(run(cli).await)
    }

    /// A loopback URL where nothing listens.
    fn closed_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        format!("https://{address}")
    }

    fn connect_args(dir: &Path) -> ConnectArgs {
        ConnectArgs {
            dir: Some(dir.to_owned()),
            ..ConnectArgs::default()
        }
    }

    #[tokio::test]
    async fn mutual_tls_with_devnet_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        start(dir.path(), &closed_url()).await;
        let mut client = connect(&connect_args(dir.path()).target().expect("target"))
            .await
            .expect("connects");
        let status = client
            .get_status(GetStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(status.chain_id, CHAIN);
    }

    #[tokio::test]
    async fn a_foreign_ca_is_a_certificate_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        start(dir.path(), &closed_url()).await;
        let other = dir.path().join("other");
        govchain_pki::init_consortium(&InitOptions {
            observers: Vec::new(),
            out: other.clone(),
            chain_id: CHAIN.into(),
            departments: vec!["health".into()],
            hosts: Vec::new(),
            force: false,
            attests: Vec::new(),
        })
        .expect("other consortium");
        // A client of the other consortium: its own CA does not trust
        // the node's certificate.
        let mut target = connect_args(dir.path()).target().expect("target");
        target.ca = other.join("ca.crt");
        target.cert = other.join("health/client.crt");
        target.key = other.join("health/client.key");
        let err = connect(&target).await.expect_err("untrusted");
        let message = format!("{err:#}");
        assert!(
            message.contains("cannot reach node at https://127.0.0.1:"),
            "{message}"
        );
        assert!(message.contains("--ca"), "{message}");

        // This consortium's client certificate with the other CA file: the
        // node would refuse the certificate, which is named before any
        // connection (a refused TLS 1.3 client sees only a closed one).
        let mut target = connect_args(dir.path()).target().expect("target");
        target.ca = other.join("ca.crt");
        let err = connect(&target)
            .await
            .expect_err("refused before connecting");
        let message = format!("{err:#}");
        assert!(
            message.contains("was not issued by the CA the node uses"),
            "{message}"
        );
        assert!(message.contains("--ca"), "{message}");
    }

    #[tokio::test]
    async fn nothing_listening_suggests_govchain_devnet() {
        let dir = tempfile::tempdir().expect("tempdir");
        start(dir.path(), &closed_url()).await;
        let mut args = connect_args(dir.path());
        args.department = Some("tax".into());
        let err = connect(&args.target().expect("target"))
            .await
            .expect_err("down");
        let message = format!("{err:#}");
        assert!(message.contains("try `govchain devnet`"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[tokio::test]
    async fn status_survives_a_down_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        start(dir.path(), &closed_url()).await;
        let dir_arg = dir.path().to_str().expect("utf-8");
        assert_eq!(
            govchain(&["status", "--dir", dir_arg, "--json"]).await,
            ExitCode::SUCCESS
        );
    }

    #[tokio::test]
    async fn block_get_and_blocks_follow() {
        let dir = tempfile::tempdir().expect("tempdir");
        start(dir.path(), &closed_url()).await;
        let dir_arg = dir.path().to_str().expect("utf-8");
        for args in [
            ["block", "get", "--dir", dir_arg, "--json"].as_slice(),
            ["block", "get", "3", "--dir", dir_arg].as_slice(),
            ["blocks", "follow", "--dir", dir_arg].as_slice(),
            [
                "blocks", "follow", "--from", "1", "--dir", dir_arg, "--json",
            ]
            .as_slice(),
        ] {
            assert_eq!(govchain(args).await, ExitCode::SUCCESS, "{args:?}");
        }
    }

    #[tokio::test]
    async fn anchor_then_verify_then_tamper() {
        let dir = tempfile::tempdir().expect("tempdir");
        start(dir.path(), &closed_url()).await;
        let dir_arg = dir.path().to_str().expect("utf-8");
        let record = dir.path().join("r.txt");
        std::fs::write(&record, "hello").expect("write");
        let record_arg = record.to_str().expect("utf-8");
        let key = dir.path().join("k.pem");
        let key_arg = key.to_str().expect("utf-8");
        let record_flags = ["--dataset", "demo", "--record-id", "r1", "--dir", dir_arg];

        assert_eq!(
            govchain(&["keys", "new", "--out", key_arg]).await,
            ExitCode::SUCCESS
        );
        let verify: Vec<&str> = ["record", "verify", record_arg]
            .into_iter()
            .chain(record_flags)
            .collect();
        assert_eq!(
            govchain(&verify).await,
            ExitCode::from(1),
            "not anchored yet"
        );

        let anchor: Vec<&str> = [
            "record",
            "anchor",
            record_arg,
            "--signing-key",
            key_arg,
            "--wait",
        ]
        .into_iter()
        .chain(record_flags)
        .collect();
        assert_eq!(govchain(&anchor).await, ExitCode::SUCCESS);
        assert_eq!(govchain(&verify).await, ExitCode::SUCCESS, "matches");

        std::fs::write(&record, "hellO").expect("tamper");
        assert_eq!(govchain(&verify).await, ExitCode::from(1), "mismatch");

        // A second version by the same signer uses the next nonce.
        assert_eq!(govchain(&anchor).await, ExitCode::SUCCESS);
        assert_eq!(
            govchain(&verify).await,
            ExitCode::SUCCESS,
            "version 2 matches"
        );

        // Another signer may not anchor a new version: committed, but failed.
        let intruder = dir.path().join("intruder.pem");
        let intruder_arg = intruder.to_str().expect("utf-8");
        assert_eq!(
            govchain(&["keys", "new", "--out", intruder_arg]).await,
            ExitCode::SUCCESS
        );
        let hijack: Vec<&str> = anchor
            .iter()
            .map(|arg| if *arg == key_arg { intruder_arg } else { *arg })
            .collect();
        assert_eq!(govchain(&hijack).await, ExitCode::from(1));
    }

    #[tokio::test]
    async fn offline_signing_then_submit() {
        let dir = tempfile::tempdir().expect("tempdir");
        start(dir.path(), &closed_url()).await;
        let dir_arg = dir.path().to_str().expect("utf-8");
        let record = dir.path().join("r.txt");
        std::fs::write(&record, "offline").expect("write");
        let key = dir.path().join("k.pem");
        let envelope = dir.path().join("r.envelope");
        let [record_arg, key_arg, envelope_arg] =
            [&record, &key, &envelope].map(|path| path.to_str().expect("utf-8"));
        assert_eq!(
            govchain(&["keys", "new", "--out", key_arg]).await,
            ExitCode::SUCCESS
        );
        let sign = [
            "record",
            "anchor",
            record_arg,
            "--dataset",
            "demo",
            "--record-id",
            "r2",
            "--signing-key",
            key_arg,
            "--nonce",
            "1",
            "--chain-id",
            CHAIN,
            "--out",
            envelope_arg,
            // Offline: no node is asked, so a wrong URL does not matter.
            "--node",
            "https://127.0.0.1:1",
            "--ca",
            "/nonexistent",
        ];
        assert_eq!(govchain(&sign).await, ExitCode::SUCCESS);
        let submit = [
            "tx",
            "submit",
            "--envelope",
            envelope_arg,
            "--wait",
            "--dir",
            dir_arg,
        ];
        assert_eq!(govchain(&submit).await, ExitCode::SUCCESS);
        // Submitting the same nonce again is refused by the node: an error.
        assert_eq!(govchain(&submit).await, ExitCode::from(2));
    }
}
