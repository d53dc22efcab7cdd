// verifyInclusion against the recursive RFC 6962 reference in rfc6962.ts.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { verifyInclusion } from "../src/merkle.js";
import { flip, ids, leafHash, mth, path } from "./rfc6962.js";

describe("verifyInclusion", () => {
  it("accepts every leaf of trees of 1 to 33 leaves", () => {
    for (let n = 1; n <= 33; n++) {
      const leaves = ids(n);
      const root = mth(leaves);
      for (let m = 0; m < n; m++) {
        assert.ok(verifyInclusion(leaves[m]!, BigInt(m), BigInt(n), path(m, leaves), root), `n=${n} m=${m}`);
      }
    }
  });

  it("refuses a path with any sibling changed", () => {
    const leaves = ids(11);
    const root = mth(leaves);
    for (let m = 0; m < 11; m++) {
      const audit = path(m, leaves);
      for (let i = 0; i < audit.length; i++) {
        const bad = [...audit];
        bad[i] = flip(bad[i]!);
        assert.equal(verifyInclusion(leaves[m]!, BigInt(m), 11n, bad, root), false, `m=${m} i=${i}`);
      }
    }
  });

  it("refuses a wrong index, size, leaf or path length", () => {
    const leaves = ids(7);
    const root = mth(leaves);
    const audit = path(5, leaves);
    assert.ok(verifyInclusion(leaves[5]!, 5n, 7n, audit, root));
    assert.equal(verifyInclusion(leaves[5]!, 4n, 7n, audit, root), false);
    // Size 8 gives leaf 5 a path of the same shape: the root alone does not
    // commit to the size, which is why the proof's size must equal the
    // certified header's transaction count (proof.test.ts).
    assert.ok(verifyInclusion(leaves[5]!, 5n, 8n, audit, root));
    assert.equal(verifyInclusion(leaves[5]!, 5n, 6n, audit, root), false);
    assert.equal(verifyInclusion(leaves[4]!, 5n, 7n, audit, root), false);
    assert.equal(verifyInclusion(leaves[5]!, 5n, 7n, audit.slice(0, -1), root), false);
    assert.equal(verifyInclusion(leaves[5]!, 5n, 7n, [...audit, root], root), false);
    assert.equal(verifyInclusion(leaves[5]!, 7n, 7n, audit, root), false);
  });

  it("handles a single-leaf tree", () => {
    const leaf = ids(1)[0]!;
    assert.ok(verifyInclusion(leaf, 0n, 1n, [], leafHash(leaf)));
    assert.equal(verifyInclusion(leaf, 0n, 1n, [leaf], leafHash(leaf)), false);
  });
});
