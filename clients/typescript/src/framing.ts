// The domain-separated SHA-256 that every govchain digest uses (Rust:
// govchain_crypto::DomainHasher): each byte string is prefixed with its
// length as u32be, the domain tag first; integers are fixed-width big-endian.
//
// SHA-256 is node's built-in `crypto`: no dependency beyond the runtime.

import { createHash } from "node:crypto";

const UTF8 = new TextEncoder();

/** u32be(data.length) || data. */
export function framed(data: Uint8Array | string): Uint8Array {
  const bytes = typeof data === "string" ? UTF8.encode(data) : data;
  const out = new Uint8Array(4 + bytes.length);
  new DataView(out.buffer).setUint32(0, bytes.length, false);
  out.set(bytes, 4);
  return out;
}

/** The 8 big-endian bytes of an unsigned 64-bit integer. */
export function u64be(value: bigint): Uint8Array {
  if (value < 0n || value > 0xffff_ffff_ffff_ffffn) {
    throw new RangeError(`${value} is not a u64`);
  }
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value, false);
  return out;
}

/** SHA-256(framed(domain) || parts...); each part is already framed or
 * fixed-width. */
export function domainHash(domain: string, ...parts: Uint8Array[]): Uint8Array {
  const digest = createHash("sha256").update(framed(domain));
  for (const part of parts) {
    digest.update(part);
  }
  return new Uint8Array(digest.digest());
}

/** Lowercase hex, for messages and comparisons. */
export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

/** Byte-wise equality. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}
