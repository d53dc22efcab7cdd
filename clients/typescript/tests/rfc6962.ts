// An independent, recursive RFC 6962 reference (MTH and PATH of RFC 6962
// section 2.1), for the tests: the verifier under test walks the path
// iteratively, this builds trees and paths by the RFC's definitions.

import { createHash } from "node:crypto";

function sha256(...parts: Uint8Array[]): Uint8Array {
  const digest = createHash("sha256");
  for (const part of parts) {
    digest.update(part);
  }
  return new Uint8Array(digest.digest());
}

export function leafHash(leaf: Uint8Array): Uint8Array {
  return sha256(new Uint8Array([0]), leaf);
}

function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(new Uint8Array([1]), left, right);
}

/** The largest power of two smaller than n. */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) {
    k *= 2;
  }
  return k;
}

/** MTH(leaves). */
export function mth(leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 1) {
    return leafHash(leaves[0]!);
  }
  const k = split(leaves.length);
  return nodeHash(mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}

/** PATH(m, leaves), deepest first. */
export function path(m: number, leaves: Uint8Array[]): Uint8Array[] {
  if (leaves.length === 1) {
    return [];
  }
  const k = split(leaves.length);
  if (m < k) {
    return [...path(m, leaves.slice(0, k)), mth(leaves.slice(k))];
  }
  return [...path(m - k, leaves.slice(k)), mth(leaves.slice(0, k))];
}

/** n distinct 32-byte leaves. */
export function ids(n: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => sha256(new TextEncoder().encode(`tx ${i}`)));
}

/** A copy of `data` with one bit of byte `at` flipped (negative: from the end). */
export function flip(data: Uint8Array, at = 0): Uint8Array {
  const copy = new Uint8Array(data);
  const index = at < 0 ? copy.length + at : at;
  copy[index] = copy[index]! ^ 1;
  return copy;
}
