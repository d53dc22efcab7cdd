"""The verifier against an independent, recursive RFC 6962 reference
(MTH and PATH of RFC 6962 section 2.1)."""

import hashlib
import unittest

from govchain_client.merkle import verify_inclusion


def leaf_hash(leaf):
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n):
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves):
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = split(len(leaves))
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m, leaves):
    if len(leaves) == 1:
        return []
    k = split(len(leaves))
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def ids(n):
    return [hashlib.sha256(b"tx %d" % i).digest() for i in range(n)]


class InclusionTest(unittest.TestCase):
    def test_every_leaf_of_trees_up_to_33(self):
        for n in range(1, 34):
            leaves = ids(n)
            root = mth(leaves)
            for m in range(n):
                with self.subTest(n=n, m=m):
                    self.assertTrue(verify_inclusion(leaves[m], m, n, path(m, leaves), root))

    def test_a_changed_sibling_fails(self):
        leaves = ids(11)
        root = mth(leaves)
        for m in range(11):
            audit = path(m, leaves)
            for i in range(len(audit)):
                bad = list(audit)
                bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
                with self.subTest(m=m, i=i):
                    self.assertFalse(verify_inclusion(leaves[m], m, 11, bad, root))

    def test_wrong_index_size_leaf_or_length_fails(self):
        leaves = ids(7)
        root = mth(leaves)
        audit = path(5, leaves)
        self.assertTrue(verify_inclusion(leaves[5], 5, 7, audit, root))
        self.assertFalse(verify_inclusion(leaves[5], 4, 7, audit, root))
        # Size 8 gives leaf 5 a path of the same shape: the root alone does
        # not commit to the size, which is why the proof's size must equal
        # the certified header's transaction count (test_proof.py).
        self.assertTrue(verify_inclusion(leaves[5], 5, 8, audit, root))
        self.assertFalse(verify_inclusion(leaves[5], 5, 6, audit, root))
        self.assertFalse(verify_inclusion(leaves[4], 5, 7, audit, root))
        self.assertFalse(verify_inclusion(leaves[5], 5, 7, audit[:-1], root))
        self.assertFalse(verify_inclusion(leaves[5], 5, 7, audit + [root], root))
        self.assertFalse(verify_inclusion(leaves[5], 7, 7, audit, root))

    def test_single_leaf_tree(self):
        leaf = ids(1)[0]
        self.assertTrue(verify_inclusion(leaf, 0, 1, [], leaf_hash(leaf)))
        self.assertFalse(verify_inclusion(leaf, 0, 1, [leaf], leaf_hash(leaf)))


if __name__ == "__main__":
    unittest.main()
