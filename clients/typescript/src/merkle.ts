// RFC 6962 (RFC 9162 section 2.1.3) audit paths over a block's transaction
// ids: leaves SHA-256(0x00 || id), inner nodes SHA-256(0x01 || left ||
// right), an odd last node rising a level unpaired (Rust:
// govchain_crypto::merkle).

import { createHash } from "node:crypto";

import { bytesEqual } from "./framing.js";

export const DIGEST_BYTES = 32;

export function hashLeaf(leaf: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(new Uint8Array([0])).update(leaf).digest());
}

export function hashNode(left: Uint8Array, right: Uint8Array): Uint8Array {
  const digest = createHash("sha256").update(new Uint8Array([1])).update(left).update(right);
  return new Uint8Array(digest.digest());
}

/**
 * True when `path` (deepest first) leads from `leaf` at `index` of a tree of
 * `treeSize` leaves to `root`. The root alone does not commit to the size:
 * a caller checks the size against what a certified header says.
 */
export function verifyInclusion(
  leaf: Uint8Array,
  index: bigint,
  treeSize: bigint,
  path: readonly Uint8Array[],
  root: Uint8Array,
): boolean {
  if (index < 0n || index >= treeSize) {
    return false;
  }
  // `node` is the running hash's position at its level, `last` the position
  // of that level's last node.
  let node = index;
  let last = treeSize - 1n;
  let running = hashLeaf(leaf);
  for (const sibling of path) {
    if (last === 0n) {
      // The root is reached, yet the path goes on.
      return false;
    }
    if ((node & 1n) === 1n || node === last) {
      running = hashNode(sibling, running);
      // A last node with no right sibling moves up unchanged.
      while ((node & 1n) === 0n && node !== 0n) {
        node >>= 1n;
        last >>= 1n;
      }
    } else {
      running = hashNode(running, sibling);
    }
    node >>= 1n;
    last >>= 1n;
  }
  return last === 0n && bytesEqual(running, root);
}
