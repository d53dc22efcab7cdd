#!/usr/bin/env bash
# Dependency direction (ARCHITECTURE.md): the pure crates never depend on
# async runtimes, the network or storage, directly or transitively.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for crate in govchain-pbft govchain-exec govchain-crypto govchain-deid; do
    tree=$(cargo tree -p "$crate" -e normal --prefix none --format '{p}')
    for forbidden in tokio tonic rustls redb hyper h2 govchain-ledger govchain-node; do
        if grep -qE "^${forbidden} v" <<<"$tree"; then
            echo "error: $crate depends on $forbidden; it must stay free of I/O (see ARCHITECTURE.md)" >&2
            status=1
        fi
    done
done
# Only the ledger (and later the blob store) touches redb.
for crate in govchain-pki govchain-proto; do
    if cargo tree -p "$crate" -e normal --prefix none --format '{p}' | grep -qE '^redb v'; then
        echo "error: $crate depends on redb" >&2
        status=1
    fi
done
# The web portal and the evidence bundle's collection are clients of the
# node's public gRPC API: they never read the ledger, the blob store or the
# node's internals.
for crate in govchain-portal govchain-evidence; do
tree=$(cargo tree -p "$crate" -e normal --prefix none --format '{p}')
for forbidden in redb govchain-ledger govchain-blobstore govchain-node; do
    if grep -qE "^${forbidden} v" <<<"$tree"; then
        echo "error: $crate depends on $forbidden; it must use the node's gRPC API only" >&2
        status=1
    fi
done
done
[ $status = 0 ] && echo "dependency direction: ok"
exit $status
