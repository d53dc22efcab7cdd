// govchain's TypeScript client: the code protoc-gen-es generates from proto/
// (importable as "govchain-client/gen/govchain/<service>/v1/<file>_pb.js")
// and a thin layer over it for what every department system needs:
// transaction ids and signatures, submit-and-wait, offline proof checks,
// structured error reasons and a resumable transaction stream.

export { bytesEqual, domainHash, framed, hex, u64be } from "./framing.js";
export { verifyInclusion } from "./merkle.js";
export {
  COMMIT_TIMEOUT_MS,
  ERROR_DOMAIN,
  RECONNECTS_MAX,
  RPC_TIMEOUT_MS,
  connect,
  errorInfo,
  errorReason,
  follow,
  nextNonce,
  NodeConnection,
  submitAndWait,
  type ConnectOptions,
  type FollowOptions,
  type Pem,
  type StreamSource,
} from "./node.js";
export {
  ProofError,
  Validators,
  blockHash,
  commitSigningBytes,
  validatorsFromGenesis,
  verifyTransactionProof,
  type Genesis,
  type ProvenTransaction,
} from "./proof.js";
export { loadSigningKey, publicKey, signEnvelope, transactionId, type SigningKey } from "./transaction.js";
// The generated messages most programs need, and the google.rpc error
// details a ConnectError carries (`err.findDetails(BadRequestSchema)`).
export * as nodeV1 from "./gen/govchain/node/v1/node_pb.js";
export * as typesV1 from "./gen/govchain/types/v1/types_pb.js";
export * as rpcDetails from "./gen/google/rpc/error_details_pb.js";
