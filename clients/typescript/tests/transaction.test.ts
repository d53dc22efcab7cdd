// Transaction ids and envelope signing bytes against vectors from the Rust
// code path and the Python client.

import assert from "node:assert/strict";
import { generateKeyPairSync, verify } from "node:crypto";
import { describe, it } from "node:test";

import { create, fromBinary } from "@bufbuild/protobuf";

import { hex } from "../src/framing.js";
import { TransactionSchema } from "../src/gen/govchain/types/v1/types_pb.js";
import { publicKey, signEnvelope, transactionId } from "../src/transaction.js";
import { pemFromSeed } from "./keys.js";

const UTF8 = new TextEncoder();
const SEVENS = new Uint8Array(32).fill(7);

// transactionId("chain-x", [7; 32], 9, "payload") as the Rust code path
// (govchain_exec::transaction_id) computes it; integration/typescript_client.rs
// passes its own computation in GOVCHAIN_TX_ID_VECTOR and checks this one.
const KNOWN_ID = "5b90e8fbec694635ac52eefe28aeaf960582519d4ecc4c6e09e378688010dc6e";

// The envelope of an anchor (dataset "health/x", record "r", hash 32 x 0x01)
// signed by the key with seed 32 x 0x03 for chain-x, nonce 4, as the Python
// client (clients/python, govchain_client.sign_envelope) makes it: the
// payload's bytes, the signer, the id and the Ed25519 signature (Ed25519
// is deterministic, so the signature is a fixed vector too).
const PYTHON_PEM =
  "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMD\n-----END PRIVATE KEY-----\n";
const PYTHON_ENVELOPE = {
  payload: "522f0a086865616c74682f781201721a200101010101010101010101010101010101010101010101010101010101010101",
  signer: "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1",
  id: "7a0cc452c5b4bd7778707e6112fd8c223991c8000150131d3d5c153d3135804f",
  signature:
    "6aa78dc56d52d017456c65daf5d370b226494c691eb3a9a035502a1cace2468af334c81dda0bdffd2ede42accc6f6f4c4185043bcbd0dec17127763586716106",
};

function anchorTransaction() {
  return create(TransactionSchema, {
    body: {
      case: "anchorRecord",
      value: { dataset: "health/x", recordId: "r", recordHash: new Uint8Array(32).fill(1) },
    },
  });
}

describe("transactionId", () => {
  it("matches the known vector", () => {
    assert.equal(hex(transactionId("chain-x", SEVENS, 9n, UTF8.encode("payload"))), KNOWN_ID);
  });

  it("matches the vector from the Rust code path", () => {
    // Set by the integration test; outside it the constant stands alone.
    const fromRust = process.env.GOVCHAIN_TX_ID_VECTOR ?? KNOWN_ID;
    assert.equal(hex(transactionId("chain-x", SEVENS, 9n, UTF8.encode("payload"))), fromRust);
  });

  it("changes with every field", () => {
    const payload = UTF8.encode("payload");
    const base = hex(transactionId("chain-x", SEVENS, 9n, payload));
    assert.notEqual(base, hex(transactionId("chain-y", SEVENS, 9n, payload)));
    assert.notEqual(base, hex(transactionId("chain-x", new Uint8Array(32).fill(8), 9n, payload)));
    assert.notEqual(base, hex(transactionId("chain-x", SEVENS, 10n, payload)));
    assert.notEqual(base, hex(transactionId("chain-x", SEVENS, 9n, UTF8.encode("payloaD"))));
  });

  it("frames the fields so that moving bytes between them changes it", () => {
    // Without length prefixes these two would hash the same bytes.
    const a = transactionId("ab", new Uint8Array(32).fill(0x63), 1n, new Uint8Array());
    const b = transactionId("a", Uint8Array.from([0x62, ...new Uint8Array(32).fill(0x63)]), 1n, new Uint8Array());
    assert.notEqual(hex(a), hex(b));
  });

  it("refuses a nonce outside u64", () => {
    assert.throws(() => transactionId("c", SEVENS, -1n, new Uint8Array()), RangeError);
    assert.throws(() => transactionId("c", SEVENS, 1n << 64n, new Uint8Array()), RangeError);
  });
});

describe("signEnvelope", () => {
  it("makes the Python client's envelope byte for byte", () => {
    assert.equal(pemFromSeed(3), PYTHON_PEM);
    const envelope = signEnvelope(PYTHON_PEM, "chain-x", 4n, anchorTransaction());
    assert.equal(hex(envelope.payload), PYTHON_ENVELOPE.payload);
    assert.equal(hex(envelope.signer), PYTHON_ENVELOPE.signer);
    assert.equal(hex(transactionId("chain-x", envelope.signer, 4n, envelope.payload)), PYTHON_ENVELOPE.id);
    assert.equal(hex(envelope.signature), PYTHON_ENVELOPE.signature);
    assert.equal(envelope.chainId, "chain-x");
    assert.equal(envelope.nonce, 4n);
  });

  it("signs the id, which a verifier recomputes from the envelope", () => {
    const pem = pemFromSeed(5);
    const envelope = signEnvelope(pem, "chain-z", 77n, anchorTransaction());
    assert.deepEqual(envelope.signer, publicKey(pem));
    const decoded = fromBinary(TransactionSchema, envelope.payload);
    assert.equal(decoded.body.case, "anchorRecord");
    assert.equal(decoded.body.value?.recordId, "r");
    const id = transactionId("chain-z", envelope.signer, 77n, envelope.payload);
    assert.ok(verify(null, id, pem, envelope.signature));
    assert.equal(verify(null, transactionId("chain-z", envelope.signer, 78n, envelope.payload), pem, envelope.signature), false);
  });

  it("refuses a key that is not Ed25519", () => {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const pem = privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    assert.throws(() => signEnvelope(pem, "c", 1n, anchorTransaction()), /not an Ed25519 private key/);
  });
});
