#!/usr/bin/env bash
# Checks the container image's runtime without a Docker engine: builds a root
# filesystem from the Debian 12 packages that gcr.io/distroless/cc-debian12 is
# made of (libc6, libgcc-s1, ca-certificates) plus tini, as the Dockerfile's
# runtime stage lays it out, and runs `tini -- govchain --version` and a
# `govchain certs init` in it with chroot, as user 65532, tini as PID 1 of a
# new PID namespace, with no network.
#
#   scripts/image-runtime-check.sh [path/to/govchain]   (default target/release/govchain)
#
# Needs root (chroot, unshare) and apt-get (downloads four .deb files from
# Debian). Not part of `make test`: it checks the image's layout, not the code.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/release/govchain}
[ -x "$binary" ] || { echo "no govchain binary at $binary (cargo build --release -p govchain-cli)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root for chroot and unshare" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$work/debs" "$root"
(cd "$work/debs" && apt-get download libc6 libgcc-s1 ca-certificates tini >/dev/null 2>&1) \
    || { echo "apt-get download failed (run apt-get update first)" >&2; exit 2; }
for package in libc6 libgcc-s1 ca-certificates; do
    dpkg-deb -x "$work"/debs/"$package"_*.deb "$root"
done
# distroless ships the generated bundle, as update-ca-certificates would write it.
mkdir -p "$root/etc/ssl/certs"
cat "$root"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/ssl/certs/ca-certificates.crt"
dpkg-deb -x "$work"/debs/tini_*.deb "$work/tini"
install -D -m 0755 "$work/tini/usr/bin/tini-static" "$root/usr/bin/tini"
install -D -m 0755 "$binary" "$root/usr/bin/govchain"
install -d -m 1777 "$root/tmp"

if [ -e "$root/bin/sh" ] || [ -e "$root/usr/bin/sh" ]; then
    echo "the runtime root has a shell; it should hold only govchain, tini, glibc, libgcc and CA certificates" >&2
    exit 1
fi
in_image() { unshare --net --pid --fork chroot --userspec=65532:65532 "$root" /usr/bin/tini -- /usr/bin/govchain "$@"; }
version=$(in_image --version)
echo "in the runtime root: $version"
[[ $version == govchain* ]] || { echo "unexpected version output: $version" >&2; exit 1; }
in_image certs init --out /tmp/certs --departments health,tax,police,civil >/dev/null
[ -f "$root/tmp/certs/genesis.json" ] || { echo "certs init wrote no genesis" >&2; exit 1; }
echo "image runtime check: ok ($(du -sh "$root" | cut -f1) root filesystem)"
