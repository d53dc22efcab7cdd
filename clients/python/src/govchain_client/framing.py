"""The domain-separated SHA-256 that every govchain digest uses (Rust:
govchain_crypto::DomainHasher): each byte string is prefixed with its length
as u32be, the domain tag first; integers are fixed-width big-endian."""

import hashlib
import struct


def framed(data):
    """u32be(len(data)) || data."""
    return struct.pack(">I", len(data)) + bytes(data)


def u64be(value):
    return struct.pack(">Q", value)


def domain_hash(domain, *parts):
    """SHA-256(framed(domain) || parts...); each part is already framed or
    fixed-width."""
    digest = hashlib.sha256(framed(domain))
    for part in parts:
        digest.update(part)
    return digest.digest()
