# syntax=docker/dockerfile:1
#
# The govchain image: `govchain` on a minimal, non-root runtime.
#
#   docker build -t govchain:0.1.0 .
#   docker run --rm govchain:0.1.0 --version
#
# Build stage: the release binary. protoc comes vendored with the proto
# crate, so the Rust image needs nothing else; tini comes from Debian.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p govchain-cli \
    && install -m 0755 target/release/govchain /usr/local/bin/govchain

# Runtime: Debian 12's glibc, libgcc and CA certificates, nothing else (no
# shell, no package manager), user nonroot (65532). govchain links only
# libc, libm and libgcc_s; it is built on the same Debian release, so the
# glibc versions match.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/bin/tini-static /usr/bin/tini
COPY --from=build /usr/local/bin/govchain /usr/bin/govchain
USER 65532:65532
# The node's data (node.toml `data_dir`); the Helm chart mounts a volume here.
VOLUME ["/var/lib/govchain"]
EXPOSE 7050 7052 9100
# tini as PID 1 forwards SIGTERM (the node stops cleanly on it) and reaps.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/bin/govchain"]
CMD ["--help"]
