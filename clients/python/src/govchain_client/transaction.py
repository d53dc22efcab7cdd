"""Transaction ids and signed envelopes (TransactionEnvelope in types.proto)."""

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from govchain.types.v1 import types_pb2
from govchain_client.framing import domain_hash, framed, u64be

DOMAIN_TRANSACTION = b"govchain/tx/v1"


def transaction_id(chain_id, signer, nonce, payload):
    """SHA-256(framed("govchain/tx/v1") || framed(chain_id) || framed(signer)
    || u64be(nonce) || framed(payload)): what the envelope's signature covers."""
    return domain_hash(
        DOMAIN_TRANSACTION,
        framed(chain_id.encode()),
        framed(signer),
        u64be(nonce),
        framed(payload),
    )


def load_signing_key(signing_key_pem):
    """An Ed25519 key from its PKCS#8 PEM (`govchain keys new`, a
    department's signing.key)."""
    key = serialization.load_pem_private_key(signing_key_pem, None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key is not an Ed25519 key")
    return key


def public_key(signing_key_pem):
    """The raw 32-byte public key of a PEM signing key: the envelope's signer."""
    return (
        load_signing_key(signing_key_pem)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def sign_envelope(signing_key_pem, chain_id, nonce, transaction):
    """Encodes `transaction` (a types_pb2.Transaction) once and signs its id.

    The payload bytes are kept as encoded: protobuf encoding is not
    canonical, so nothing re-encodes them to verify.
    """
    key = load_signing_key(signing_key_pem)
    signer = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    payload = transaction.SerializeToString()
    tx_id = transaction_id(chain_id, signer, nonce, payload)
    return types_pb2.TransactionEnvelope(
        payload=payload,
        signer=signer,
        signature=key.sign(tx_id),
        chain_id=chain_id,
        nonce=nonce,
    )
