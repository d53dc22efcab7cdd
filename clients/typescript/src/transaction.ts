// Transaction ids and signed envelopes (TransactionEnvelope in types.proto).
//
// Ed25519 is node's built-in `crypto` (PKCS#8 PEM keys as `govchain keys
// new` writes them): no dependency beyond the runtime.

import { createPrivateKey, createPublicKey, sign, type KeyObject } from "node:crypto";

import { create, toBinary } from "@bufbuild/protobuf";

import {
  type Transaction,
  type TransactionEnvelope,
  TransactionEnvelopeSchema,
  TransactionSchema,
} from "./gen/govchain/types/v1/types_pb.js";
import { domainHash, framed, u64be } from "./framing.js";

export const DOMAIN_TRANSACTION = "govchain/tx/v1";
export const PUBLIC_KEY_BYTES = 32;

/**
 * SHA-256(framed("govchain/tx/v1") || framed(chainId) || framed(signer) ||
 * u64be(nonce) || framed(payload)): what the envelope's signature covers.
 */
export function transactionId(
  chainId: string,
  signer: Uint8Array,
  nonce: bigint,
  payload: Uint8Array,
): Uint8Array {
  return domainHash(DOMAIN_TRANSACTION, framed(chainId), framed(signer), u64be(nonce), framed(payload));
}

/** A signing key: an Ed25519 PKCS#8 PEM (a department's signing.key), or a
 * key node's crypto already loaded. */
export type SigningKey = string | Uint8Array | KeyObject;

/** Loads an Ed25519 private key; throws when it is another kind of key. */
export function loadSigningKey(signingKey: SigningKey): KeyObject {
  const key =
    typeof signingKey === "string" || signingKey instanceof Uint8Array
      ? createPrivateKey({ key: Buffer.from(signingKey), format: "pem" })
      : signingKey;
  if (key.type !== "private" || key.asymmetricKeyType !== "ed25519") {
    throw new TypeError(
      `the signing key is not an Ed25519 private key (${key.type} ${key.asymmetricKeyType ?? "?"})`,
    );
  }
  return key;
}

/** The raw 32-byte public key of a signing key: the envelope's signer. */
export function publicKey(signingKey: SigningKey): Uint8Array {
  const jwk = createPublicKey(loadSigningKey(signingKey)).export({ format: "jwk" });
  if (jwk.x === undefined) {
    throw new TypeError("the Ed25519 public key exported no `x`");
  }
  const raw = new Uint8Array(Buffer.from(jwk.x, "base64url"));
  if (raw.length !== PUBLIC_KEY_BYTES) {
    throw new TypeError(`an Ed25519 public key of ${raw.length} bytes`);
  }
  return raw;
}

/** A raw 32-byte Ed25519 public key as a key node's crypto verifies with. */
export function ed25519PublicKey(raw: Uint8Array): KeyObject {
  if (raw.length !== PUBLIC_KEY_BYTES) {
    throw new TypeError(`an Ed25519 public key is ${PUBLIC_KEY_BYTES} bytes, not ${raw.length}`);
  }
  const x = Buffer.from(raw).toString("base64url");
  return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
}

/**
 * Encodes `transaction` once and signs its id. The payload bytes are kept
 * as encoded: protobuf encoding is not canonical, so nothing re-encodes
 * them to verify.
 */
export function signEnvelope(
  signingKey: SigningKey,
  chainId: string,
  nonce: bigint,
  transaction: Transaction,
): TransactionEnvelope {
  const key = loadSigningKey(signingKey);
  const signer = publicKey(key);
  const payload = toBinary(TransactionSchema, transaction);
  const id = transactionId(chainId, signer, nonce, payload);
  // Ed25519 hashes internally: the algorithm argument is null.
  const signature = new Uint8Array(sign(null, id, key));
  return create(TransactionEnvelopeSchema, { payload, signer, signature, chainId, nonce });
}
