#!/usr/bin/env bash
# Regenerates the reference CIDs embedded in crates/blobstore/tests/vectors.rs
# with IPFS's JavaScript importer, so that anyone can re-check them.
#
# Setup, once, in a scratch folder outside the repository:
#   mkdir -p /tmp/ipfsref && cd /tmp/ipfsref
#   npm install ipfs-unixfs-importer@17 blockstore-core@7 multiformats@14
# Then, from the workspace root:
#   GOVCHAIN_IPFS_REFERENCE_DIR=/tmp/ipfsref \
#     bash crates/blobstore/tests/reference/ipfs-cid-vectors.sh
#
# Each line printed is `SIZE_BYTES [CHUNK_BYTES MAX_LINKS] CID` for a file
# whose byte i is `i % 251`. Without CHUNK_BYTES and MAX_LINKS the CID is the
# `unixfs-v1-2025` profile's (`node ipfs-cid.mjs FILE`); with them it is
# `node ipfs-cid.mjs FILE CHUNK_BYTES MAX_LINKS`.
#
# ipfs-cid.mjs imports its packages as ES modules, which Node resolves from
# the script's own folder and not from NODE_PATH, so the script runs from a
# temporary folder holding a copy of it and a link to the installed
# node_modules.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
reference=${GOVCHAIN_IPFS_REFERENCE_DIR:?set GOVCHAIN_IPFS_REFERENCE_DIR to the folder where the npm packages are installed}
if [ ! -d "$reference/node_modules/ipfs-unixfs-importer" ]; then
    echo "no ipfs-unixfs-importer in $reference/node_modules: see the setup at the top of $0" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/ipfs-cid.mjs" "$work/ipfs-cid.mjs"
ln -s "$reference/node_modules" "$work/node_modules"

# Writes SIZE bytes, byte i being i % 251, to FILE.
pattern() {
    node -e '
        const size = Number(process.argv[1])
        const bytes = Buffer.alloc(size)
        for (let i = 0; i < size; i++) bytes[i] = i % 251
        require("node:fs").writeFileSync(process.argv[2], bytes)
    ' "$1" "$2"
}

vector() {
    local size=$1
    shift
    pattern "$size" "$work/file"
    echo "$size${*:+ $*} $(node "$work/ipfs-cid.mjs" "$work/file" "$@")"
}

MIB=1048576
# Profile unixfs-v1-2025.
vector 0
vector 1
vector 100
vector $MIB
vector $((MIB + 1))
vector $((3 * MIB))
vector $((5 * MIB))
# 1 KiB chunks and 174 links per node: 1024 chunks make a two-level tree.
vector $MIB 1024 174
# Small chunks and narrow nodes: edges of one full node, and a tree of
# three levels with a one-link spine on its right.
vector 174 1 174
vector 175 1 174
vector 0 16 4
vector 16 16 4
vector 64 16 4
vector 65 16 4
vector 1000 16 4
vector 1025 16 4
# Profile unixfs-v1-2025 at its width: 1024 chunks fill one node, 1025 make
# a two-level tree. The explicit parameters must give the profile's CID.
vector $((1024 * MIB))
vector $((1025 * MIB))
vector $((1025 * MIB)) $MIB 1024
