"""Offline checks of a GetTransaction answer with an inclusion proof, against
genesis alone (Rust: govchain_node::inclusion_proof::verify_transaction_proof).

What a verified answer establishes: the envelope hashes to the answer's
transaction id and its signature verifies; that id is leaf `index` of the
block whose header a quorum (2f+1) of genesis's validators certified; the
answer's height, block hash and index are the proven ones. The `result` is
not proven: no header commits to it.
"""

import dataclasses
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from govchain.types.v1 import types_pb2
from govchain_client.framing import domain_hash, framed, u64be
from govchain_client.merkle import DIGEST_BYTES, verify_inclusion
from govchain_client.transaction import transaction_id

DOMAIN_BLOCK = b"govchain/block/v1"
DOMAIN_COMMIT = b"govchain/pbft/commit/v1"


class ProofError(Exception):
    """An item of the answer that does not hold; `item` names it ("envelope
    id", "commit signature", "audit path", ...)."""

    def __init__(self, item, message):
        super().__init__(f"{item}: {message}")
        self.item = item


@dataclasses.dataclass(frozen=True)
class ProvenTransaction:
    transaction_id: bytes
    envelope: types_pb2.TransactionEnvelope
    height: int
    block_hash: bytes
    timestamp_ms: int
    # Position in the block, from 0, and the block's transaction count.
    index: int
    tree_size: int
    # Distinct validators whose commit signatures were checked, and the quorum.
    signers: int
    quorum: int


@dataclasses.dataclass(frozen=True)
class Validators:
    chain_id: str
    keys: list

    @property
    def quorum(self):
        faults = (len(self.keys) - 1) // 3
        return (len(self.keys) + faults) // 2 + 1


def validators_from_genesis(genesis_json):
    """Chain id and validator keys (in index order) from genesis.json: its
    text, bytes or parsed dict."""
    genesis = genesis_json if isinstance(genesis_json, dict) else json.loads(genesis_json)
    keys = [
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(v["consensus_public_key"]))
        for v in genesis["validators"]
    ]
    if not keys:
        raise ValueError("genesis lists no validators")
    return Validators(genesis["chain_id"], keys)


def block_hash(header_bytes):
    """SHA-256(framed("govchain/block/v1") || framed(header)) over the
    header's bytes exactly as given."""
    return domain_hash(DOMAIN_BLOCK, framed(header_bytes))


def commit_signing_bytes(chain_id, view, height, hash_):
    """What a validator's commit signature covers (CommitSignature)."""
    return framed(DOMAIN_COMMIT) + framed(chain_id.encode()) + u64be(view) + u64be(height) + hash_


def verify_transaction_proof(response, genesis_json, expected_id=None):
    """Checks a GetTransactionResponse asked with prove=True; returns a
    ProvenTransaction or raises ProofError naming the item at fault.
    `expected_id`, when given, is the id the caller asked for."""
    validators = validators_from_genesis(genesis_json)
    if not response.HasField("envelope"):
        raise ProofError("envelope", "the answer carries no envelope")
    if not response.HasField("proof"):
        raise ProofError("proof", "the answer carries no inclusion proof")
    envelope, proof = response.envelope, response.proof
    tx_id = check_envelope(envelope, expected_id or response.transaction_id)
    header, hash_, signers = certify_header(validators, proof.header, proof)
    check_path(tx_id, header, proof)
    claim("block height", response.block_height, header.height)
    claim("block hash", response.block_hash.hex(), hash_.hex())
    claim("index", response.index, proof.leaf_index)
    return ProvenTransaction(
        transaction_id=tx_id,
        envelope=envelope,
        height=header.height,
        block_hash=hash_,
        timestamp_ms=header.timestamp_ms,
        index=proof.leaf_index,
        tree_size=proof.tree_size,
        signers=signers,
        quorum=validators.quorum,
    )


def check_envelope(envelope, expected_id):
    """The envelope hashes to the expected id, and its signer signed that id
    (the id does not cover the signature)."""
    tx_id = transaction_id(envelope.chain_id, envelope.signer, envelope.nonce, envelope.payload)
    if tx_id != expected_id:
        raise ProofError(
            "envelope id", f"the envelope hashes to {tx_id.hex()}, not {expected_id.hex()}"
        )
    try:
        signer = Ed25519PublicKey.from_public_bytes(envelope.signer)
        signer.verify(envelope.signature, tx_id)
    except (ValueError, InvalidSignature):
        raise ProofError(
            "envelope signature", f"does not verify for signer {envelope.signer.hex()}"
        ) from None
    return tx_id


def certify_header(validators, header_bytes, proof):
    """Decodes the header and checks that a quorum of genesis's validators
    committed its hash; returns (header, hash, signers)."""
    try:
        header = types_pb2.BlockHeader.FromString(header_bytes)
    except DecodeError as err:
        raise ProofError("header", f"does not decode: {err}") from None
    if header.chain_id != validators.chain_id:
        raise ProofError(
            "header", f"is for chain {header.chain_id!r}, genesis for {validators.chain_id!r}"
        )
    if not proof.HasField("certificate"):
        raise ProofError("certificate", "the proof has no commit certificate")
    certificate = proof.certificate
    hash_ = block_hash(header_bytes)
    claim("certificate height", certificate.height, header.height)
    claim("certificate block hash", certificate.block_hash.hex(), hash_.hex())
    message = commit_signing_bytes(validators.chain_id, certificate.view, header.height, hash_)
    seen = set()
    for signature in certificate.signatures:
        index = signature.validator_index
        if index in seen:
            raise ProofError("commit signature", f"validator {index} signs twice")
        seen.add(index)
        if index >= len(validators.keys):
            raise ProofError(
                "commit signature", f"validator {index} is not among {len(validators.keys)}"
            )
        try:
            validators.keys[index].verify(signature.signature, message)
        except InvalidSignature:
            raise ProofError(
                "commit signature", f"validator {index}'s does not verify"
            ) from None
    if len(seen) < validators.quorum:
        raise ProofError(
            "quorum", f"{len(seen)} distinct signers, the quorum is {validators.quorum}"
        )
    return header, hash_, len(seen)


def check_path(tx_id, header, proof):
    """The audit path leads from the id to the header's transactions root,
    in a tree of exactly the header's transaction count."""
    if proof.tree_size != header.transaction_count:
        raise ProofError(
            "tree size",
            f"{proof.tree_size} is not the header's transaction count {header.transaction_count}",
        )
    if proof.leaf_index >= proof.tree_size:
        raise ProofError(
            "leaf index", f"{proof.leaf_index} is outside the block's {proof.tree_size}"
        )
    for sibling in proof.audit_path:
        if len(sibling) != DIGEST_BYTES:
            raise ProofError("audit path", f"a hash is {len(sibling)} bytes, not 32")
    root = header.transactions_root
    if not verify_inclusion(tx_id, proof.leaf_index, proof.tree_size, list(proof.audit_path), root):
        raise ProofError(
            "audit path",
            f"{len(proof.audit_path)} hashes do not lead from {tx_id.hex()} at index "
            f"{proof.leaf_index} of {proof.tree_size} to the root {root.hex()}",
        )


def claim(item, claimed, proven):
    if claimed != proven:
        raise ProofError(item, f"the answer says {claimed}, the proof {proven}")
