"""RFC 6962 (RFC 9162 section 2.1.3) audit paths over a block's transaction
ids: leaves SHA-256(0x00 || id), inner nodes SHA-256(0x01 || left || right),
an odd last node rising a level unpaired (Rust: govchain_crypto::merkle)."""

import hashlib

DIGEST_BYTES = 32


def hash_leaf(leaf):
    return hashlib.sha256(b"\x00" + leaf).digest()


def hash_node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf, index, tree_size, path, root):
    """True when `path` (deepest first) leads from `leaf` at `index` of a
    tree of `tree_size` leaves to `root`."""
    if index >= tree_size:
        return False
    # `node` is the running hash's position at its level, `last` the
    # position of that level's last node.
    node, last = index, tree_size - 1
    running = hash_leaf(leaf)
    for sibling in path:
        if last == 0:
            # The root is reached, yet the path goes on.
            return False
        if node & 1 == 1 or node == last:
            running = hash_node(sibling, running)
            # A last node with no right sibling moves up unchanged.
            while node & 1 == 0 and node != 0:
                node >>= 1
                last >>= 1
        else:
            running = hash_node(running, sibling)
        node >>= 1
        last >>= 1
    return last == 0 and running == root
