"""govchain's Python client: the stubs generated from proto/ (importable as
govchain.<service>.v1) and a thin layer over them for what every department
system needs: transaction ids and signatures, submit-and-wait, offline proof
checks, structured error reasons and a resumable event stream."""

from govchain_client.merkle import verify_inclusion
from govchain_client.node import (
    connect,
    error_reason,
    follow,
    next_nonce,
    submit_and_wait,
)
from govchain_client.proof import ProofError, ProvenTransaction, verify_transaction_proof
from govchain_client.transaction import public_key, sign_envelope, transaction_id

__all__ = [
    "ProofError",
    "ProvenTransaction",
    "connect",
    "error_reason",
    "follow",
    "next_nonce",
    "public_key",
    "sign_envelope",
    "submit_and_wait",
    "transaction_id",
    "verify_inclusion",
    "verify_transaction_proof",
]
