// Offline checks of a GetTransaction answer with an inclusion proof, against
// genesis alone (Rust: govchain_node::inclusion_proof::verify_transaction_proof;
// Python: govchain_client.proof).
//
// What a verified answer establishes: the envelope hashes to the answer's
// transaction id and its signature verifies; that id is leaf `index` of the
// block whose header a quorum (2f+1) of genesis's validators certified; the
// answer's height, block hash and index are the proven ones. The `result` is
// not proven: no header commits to it.

import { verify, type KeyObject } from "node:crypto";

import { fromBinary } from "@bufbuild/protobuf";

import type { GetTransactionResponse } from "./gen/govchain/node/v1/node_pb.js";
import {
  type BlockHeader,
  BlockHeaderSchema,
  type CommitCertificate,
  type InclusionProof,
  type TransactionEnvelope,
} from "./gen/govchain/types/v1/types_pb.js";
import { bytesEqual, domainHash, framed, hex, u64be } from "./framing.js";
import { DIGEST_BYTES, verifyInclusion } from "./merkle.js";
import { ed25519PublicKey, transactionId } from "./transaction.js";

export const DOMAIN_BLOCK = "govchain/block/v1";
export const DOMAIN_COMMIT = "govchain/pbft/commit/v1";

/** An item of the answer that does not hold; `item` names it ("envelope
 * id", "commit signature", "audit path", ...). */
export class ProofError extends Error {
  readonly item: string;

  constructor(item: string, message: string) {
    super(`${item}: ${message}`);
    this.name = "ProofError";
    this.item = item;
  }
}

/** A transaction whose inclusion in a certified block was verified. */
export interface ProvenTransaction {
  readonly transactionId: Uint8Array;
  readonly envelope: TransactionEnvelope;
  readonly height: bigint;
  readonly blockHash: Uint8Array;
  readonly timestampMs: bigint;
  /** Position in the block, from 0, and the block's transaction count. */
  readonly index: bigint;
  readonly treeSize: bigint;
  /** Distinct validators whose commit signatures were checked, and the quorum. */
  readonly signers: number;
  readonly quorum: number;
}

/** The chain id and validator keys (in index order) of a genesis. */
export class Validators {
  readonly chainId: string;
  readonly keys: readonly KeyObject[];

  constructor(chainId: string, keys: readonly KeyObject[]) {
    if (keys.length === 0) {
      throw new RangeError("genesis lists no validators");
    }
    this.chainId = chainId;
    this.keys = keys;
  }

  /** 2f+1 of n = 3f+1 validators (Rust: govchain_pbft::quorum). */
  get quorum(): number {
    const faults = Math.floor((this.keys.length - 1) / 3);
    return Math.floor((this.keys.length + faults) / 2) + 1;
  }
}

/** genesis.json: its text, bytes or parsed object. */
export type Genesis = string | Uint8Array | { chain_id: string; validators: { consensus_public_key: string }[] };

export function validatorsFromGenesis(genesis: Genesis): Validators {
  const parsed =
    typeof genesis === "string" || genesis instanceof Uint8Array
      ? JSON.parse(Buffer.from(genesis).toString("utf8"))
      : genesis;
  const keys = (parsed.validators as { consensus_public_key: string }[]).map((v) =>
    ed25519PublicKey(new Uint8Array(Buffer.from(v.consensus_public_key, "hex"))),
  );
  return new Validators(parsed.chain_id as string, keys);
}

/** SHA-256(framed("govchain/block/v1") || framed(header)) over the header's
 * bytes exactly as given. */
export function blockHash(headerBytes: Uint8Array): Uint8Array {
  return domainHash(DOMAIN_BLOCK, framed(headerBytes));
}

/** What a validator's commit signature covers (CommitSignature). */
export function commitSigningBytes(chainId: string, view: bigint, height: bigint, hash: Uint8Array): Uint8Array {
  return Buffer.concat([framed(DOMAIN_COMMIT), framed(chainId), u64be(view), u64be(height), hash]);
}

/**
 * Checks a GetTransactionResponse asked with `prove: true`; returns the
 * ProvenTransaction or throws a ProofError naming the item at fault.
 * `expectedId`, when given, is the id the caller asked for.
 */
export function verifyTransactionProof(
  response: GetTransactionResponse,
  genesis: Genesis,
  expectedId?: Uint8Array,
): ProvenTransaction {
  const validators = validatorsFromGenesis(genesis);
  const { envelope, proof } = response;
  if (envelope === undefined) {
    throw new ProofError("envelope", "the answer carries no envelope");
  }
  if (proof === undefined) {
    throw new ProofError("proof", "the answer carries no inclusion proof");
  }
  const id = checkEnvelope(envelope, expectedId ?? response.transactionId);
  const { header, hash, signers } = certifyHeader(validators, proof);
  checkPath(id, header, proof);
  claim("block height", response.blockHeight, header.height);
  claim("block hash", hex(response.blockHash), hex(hash));
  claim("index", BigInt(response.index), proof.leafIndex);
  return {
    transactionId: id,
    envelope,
    height: header.height,
    blockHash: hash,
    timestampMs: header.timestampMs,
    index: proof.leafIndex,
    treeSize: proof.treeSize,
    signers,
    quorum: validators.quorum,
  };
}

/** The envelope hashes to the expected id, and its signer signed that id
 * (the id does not cover the signature). */
function checkEnvelope(envelope: TransactionEnvelope, expectedId: Uint8Array): Uint8Array {
  const id = transactionId(envelope.chainId, envelope.signer, envelope.nonce, envelope.payload);
  if (!bytesEqual(id, expectedId)) {
    throw new ProofError("envelope id", `the envelope hashes to ${hex(id)}, not ${hex(expectedId)}`);
  }
  if (!verifies(envelope.signer, id, envelope.signature)) {
    throw new ProofError("envelope signature", `does not verify for signer ${hex(envelope.signer)}`);
  }
  return id;
}

/** Decodes the header and checks that a quorum of genesis's validators
 * committed its hash. */
function certifyHeader(
  validators: Validators,
  proof: InclusionProof,
): { header: BlockHeader; hash: Uint8Array; signers: number } {
  let header: BlockHeader;
  try {
    header = fromBinary(BlockHeaderSchema, proof.header);
  } catch (err) {
    throw new ProofError("header", `does not decode: ${String(err)}`);
  }
  if (header.chainId !== validators.chainId) {
    throw new ProofError("header", `is for chain "${header.chainId}", genesis for "${validators.chainId}"`);
  }
  const certificate = proof.certificate;
  if (certificate === undefined) {
    throw new ProofError("certificate", "the proof has no commit certificate");
  }
  const hash = blockHash(proof.header);
  claim("certificate height", certificate.height, header.height);
  claim("certificate block hash", hex(certificate.blockHash), hex(hash));
  const signers = checkCommitSignatures(validators, certificate, header.height, hash);
  return { header, hash, signers };
}

/** Each signature is a distinct genesis validator's over the commit bytes;
 * returns how many, at least the quorum. */
function checkCommitSignatures(
  validators: Validators,
  certificate: CommitCertificate,
  height: bigint,
  hash: Uint8Array,
): number {
  const message = commitSigningBytes(validators.chainId, certificate.view, height, hash);
  const seen = new Set<number>();
  for (const { validatorIndex: index, signature } of certificate.signatures) {
    if (seen.has(index)) {
      throw new ProofError("commit signature", `validator ${index} signs twice`);
    }
    seen.add(index);
    const key = validators.keys[index];
    if (key === undefined) {
      throw new ProofError("commit signature", `validator ${index} is not among ${validators.keys.length}`);
    }
    if (!verifies(key, message, signature)) {
      throw new ProofError("commit signature", `validator ${index}'s does not verify`);
    }
  }
  if (seen.size < validators.quorum) {
    throw new ProofError("quorum", `${seen.size} distinct signers, the quorum is ${validators.quorum}`);
  }
  return seen.size;
}

/** The audit path leads from the id to the header's transactions root, in a
 * tree of exactly the header's transaction count. */
function checkPath(id: Uint8Array, header: BlockHeader, proof: InclusionProof): void {
  if (proof.treeSize !== BigInt(header.transactionCount)) {
    throw new ProofError(
      "tree size",
      `${proof.treeSize} is not the header's transaction count ${header.transactionCount}`,
    );
  }
  if (proof.leafIndex >= proof.treeSize) {
    throw new ProofError("leaf index", `${proof.leafIndex} is outside the block's ${proof.treeSize}`);
  }
  for (const sibling of proof.auditPath) {
    if (sibling.length !== DIGEST_BYTES) {
      throw new ProofError("audit path", `a hash is ${sibling.length} bytes, not ${DIGEST_BYTES}`);
    }
  }
  const root = header.transactionsRoot;
  if (!verifyInclusion(id, proof.leafIndex, proof.treeSize, proof.auditPath, root)) {
    throw new ProofError(
      "audit path",
      `${proof.auditPath.length} hashes do not lead from ${hex(id)} at index ` +
        `${proof.leafIndex} of ${proof.treeSize} to the root ${hex(root)}`,
    );
  }
}

/** An Ed25519 signature check; a malformed key or signature is no
 * signature. */
function verifies(key: KeyObject | Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    const publicKey = key instanceof Uint8Array ? ed25519PublicKey(key) : key;
    // Ed25519 hashes internally: the algorithm argument is null.
    return verify(null, message, publicKey, signature);
  } catch {
    return false;
  }
}

function claim<T extends bigint | string>(item: string, claimed: T, proven: T): void {
  if (claimed !== proven) {
    throw new ProofError(item, `the answer says ${claimed}, the proof ${proven}`);
  }
}
