// Ed25519 keys from fixed seeds, for the tests.

import { createPrivateKey, type KeyObject } from "node:crypto";

// The DER prefix of an Ed25519 PKCS#8 private key (RFC 8410 section 7): the
// 32-byte seed follows it.
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

/** The Ed25519 key whose seed is 32 times `byte`. */
export function keyFromSeed(byte: number): KeyObject {
  const der = Buffer.concat([PKCS8_ED25519_PREFIX, Buffer.alloc(32, byte)]);
  return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
}

/** The same key as PKCS#8 PEM, as `govchain keys new` writes it. */
export function pemFromSeed(byte: number): string {
  return keyFromSeed(byte).export({ format: "pem", type: "pkcs8" }).toString();
}
