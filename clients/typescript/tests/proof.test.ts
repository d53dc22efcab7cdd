// verifyTransactionProof against a block built and certified here, with four
// validator keys from fixed seeds, and each item tampered in turn (the same
// cases as the Python client's test_proof.py).

import assert from "node:assert/strict";
import { createPublicKey, sign } from "node:crypto";
import { describe, it } from "node:test";

import { clone, create, toBinary } from "@bufbuild/protobuf";

import {
  type GetTransactionResponse,
  GetTransactionResponseSchema,
  TransactionStatus,
} from "../src/gen/govchain/node/v1/node_pb.js";
import {
  BlockHeaderSchema,
  CommitSignatureSchema,
  TransactionSchema,
} from "../src/gen/govchain/types/v1/types_pb.js";
import { hex } from "../src/framing.js";
import { ProofError, blockHash, commitSigningBytes, verifyTransactionProof } from "../src/proof.js";
import { signEnvelope, transactionId } from "../src/transaction.js";
import { keyFromSeed, pemFromSeed } from "./keys.js";
import { flip, mth, path } from "./rfc6962.js";

const CHAIN = "test-chain";
const HEIGHT = 9n;
const VIEW = 3n;
const VALIDATOR_KEYS = [1, 2, 3, 4].map(keyFromSeed);
const SIGNER_PEM = pemFromSeed(9);

function rawPublicKey(seed: number): string {
  const jwk = createPublicKey(keyFromSeed(seed)).export({ format: "jwk" });
  return Buffer.from(jwk.x!, "base64url").toString("hex");
}

const GENESIS_OBJECT = {
  chain_id: CHAIN,
  validators: [1, 2, 3, 4].map((seed, i) => ({
    name: `v${i}`,
    consensus_public_key: rawPublicKey(seed),
    tls_identity: "",
  })),
};
const GENESIS = JSON.stringify(GENESIS_OBJECT);

function envelope(nonce: number) {
  const transaction = create(TransactionSchema, {
    body: {
      case: "anchorRecord",
      value: { dataset: "health/x", recordId: `r${nonce}`, recordHash: new Uint8Array(32).fill(nonce) },
    },
  });
  return signEnvelope(SIGNER_PEM, CHAIN, BigInt(nonce), transaction);
}

/** An honest node's answer for transaction `index` of a block of `count`,
 * certified by the first `signers` validators. */
function answer(count: number, index: number, signers = 3): GetTransactionResponse {
  const envelopes = Array.from({ length: count }, (_, n) => envelope(n + 1));
  const ids = envelopes.map((e) => transactionId(e.chainId, e.signer, e.nonce, e.payload));
  const header = toBinary(
    BlockHeaderSchema,
    create(BlockHeaderSchema, {
      chainId: CHAIN,
      height: HEIGHT,
      parentHash: new Uint8Array(32).fill(1),
      transactionsRoot: mth(ids),
      stateRoot: new Uint8Array(32).fill(2),
      timestampMs: 1000n,
      view: VIEW,
      transactionCount: count,
    }),
  );
  const hash = blockHash(header);
  const message = commitSigningBytes(CHAIN, VIEW, HEIGHT, hash);
  const signatures = VALIDATOR_KEYS.slice(0, signers).map((key, i) =>
    create(CommitSignatureSchema, { validatorIndex: i, signature: new Uint8Array(sign(null, message, key)) }),
  );
  return create(GetTransactionResponseSchema, {
    transactionId: ids[index]!,
    status: TransactionStatus.COMMITTED,
    blockHeight: HEIGHT,
    blockHash: hash,
    index,
    envelope: envelopes[index]!,
    proof: {
      header,
      certificate: { height: HEIGHT, view: VIEW, blockHash: hash, signatures },
      leafIndex: BigInt(index),
      treeSize: BigInt(count),
      auditPath: path(index, ids),
    },
  });
}

function assertRefused(response: GetTransactionResponse, item: string, genesis: object | string = GENESIS): void {
  assert.throws(
    () => verifyTransactionProof(response, genesis as string),
    (err: unknown) => {
      assert.ok(err instanceof ProofError, `not a ProofError: ${String(err)}`);
      assert.equal(err.item, item, err.message);
      return true;
    },
  );
}

describe("verifyTransactionProof", () => {
  it("accepts honest answers", () => {
    for (const [count, index] of [
      [1, 0],
      [2, 1],
      [5, 4],
      [7, 2],
    ] as const) {
      const response = answer(count, index);
      const proven = verifyTransactionProof(response, GENESIS);
      assert.equal(hex(proven.transactionId), hex(response.transactionId));
      assert.deepEqual([proven.height, proven.index, proven.treeSize], [HEIGHT, BigInt(index), BigInt(count)]);
      assert.deepEqual([proven.signers, proven.quorum], [3, 3]);
      assert.equal(proven.timestampMs, 1000n);
    }
  });

  it("takes genesis as text, bytes or an object, and checks the id asked for", () => {
    const response = answer(3, 1);
    assert.equal(verifyTransactionProof(response, GENESIS_OBJECT).index, 1n);
    assert.equal(verifyTransactionProof(response, new TextEncoder().encode(GENESIS)).index, 1n);
    const other = answer(3, 2).transactionId;
    assert.throws(() => verifyTransactionProof(response, GENESIS, other), { name: "ProofError" });
  });

  it("refuses a tampered payload", () => {
    const response = answer(5, 2);
    response.envelope!.payload = flip(response.envelope!.payload, 3);
    assertRefused(response, "envelope id");
  });

  it("refuses a tampered envelope signature", () => {
    const response = answer(5, 2);
    response.envelope!.signature = flip(response.envelope!.signature);
    assertRefused(response, "envelope signature");
  });

  it("refuses a tampered header", () => {
    const response = answer(5, 2);
    // The last byte is transaction_count's value: it still decodes.
    response.proof!.header = flip(response.proof!.header, -1);
    assertRefused(response, "certificate block hash");
  });

  it("refuses a header that does not decode", () => {
    const response = answer(5, 2);
    response.proof!.header = Uint8Array.from([0xff, 0xff, 0xff]);
    assertRefused(response, "header");
  });

  it("refuses a tampered commit signature", () => {
    const response = answer(5, 2);
    const signature = response.proof!.certificate!.signatures[1]!;
    signature.signature = flip(signature.signature, 10);
    assertRefused(response, "commit signature");
  });

  it("refuses too few signers", () => {
    assertRefused(answer(5, 2, 2), "quorum");
  });

  it("refuses a signer counted twice", () => {
    const response = answer(5, 2, 2);
    const signatures = response.proof!.certificate!.signatures;
    signatures.push(clone(CommitSignatureSchema, signatures[0]!));
    assertRefused(response, "commit signature");
  });

  it("refuses a validator index beyond genesis", () => {
    const response = answer(5, 2);
    response.proof!.certificate!.signatures[2]!.validatorIndex = 4;
    assertRefused(response, "commit signature");
  });

  it("refuses another chain's genesis", () => {
    assertRefused(answer(2, 0), "header", { ...GENESIS_OBJECT, chain_id: "other-chain" });
  });

  it("refuses a tampered audit path", () => {
    for (const at of [0, 1, 2]) {
      const response = answer(5, 2);
      response.proof!.auditPath[at] = flip(response.proof!.auditPath[at]!, 31);
      assertRefused(response, "audit path");
    }
  });

  it("refuses a tree size other than the header's count", () => {
    const response = answer(7, 5);
    response.proof!.treeSize = 8n;
    assertRefused(response, "tree size");
  });

  it("refuses a moved leaf index", () => {
    const response = answer(5, 2);
    response.proof!.leafIndex = 3n;
    assertRefused(response, "audit path");
  });

  it("refuses claims other than the proven ones", () => {
    let response = answer(5, 2);
    response.blockHeight = HEIGHT + 1n;
    assertRefused(response, "block height");
    response = answer(5, 2);
    response.index = 3;
    assertRefused(response, "index");
    response = answer(5, 2);
    response.blockHash = flip(response.blockHash);
    assertRefused(response, "block hash");
  });

  it("refuses an answer without a proof or an envelope", () => {
    let response = answer(2, 0);
    response.proof = undefined;
    assertRefused(response, "proof");
    response = answer(2, 0);
    response.envelope = undefined;
    assertRefused(response, "envelope");
  });
});
