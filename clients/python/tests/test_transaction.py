import os
import unittest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from govchain.types.v1 import types_pb2
from govchain_client import public_key, sign_envelope, transaction_id

# transaction_id("chain-x", [7; 32], 9, b"payload") as the Rust code path
# (govchain_exec::transaction_id) computes it; integration/python_client_package.rs
# passes its own computation in GOVCHAIN_TX_ID_VECTOR and checks this one.
KNOWN_ID = "5b90e8fbec694635ac52eefe28aeaf960582519d4ecc4c6e09e378688010dc6e"


def pem(seed):
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class TransactionIdTest(unittest.TestCase):
    def test_known_vector(self):
        tx_id = transaction_id("chain-x", bytes([7] * 32), 9, b"payload")
        self.assertEqual(tx_id.hex(), KNOWN_ID)

    def test_vector_from_rust(self):
        # Set by the integration test; outside it the constant stands alone.
        from_rust = os.environ.get("GOVCHAIN_TX_ID_VECTOR", KNOWN_ID)
        self.assertEqual(transaction_id("chain-x", bytes([7] * 32), 9, b"payload").hex(), from_rust)

    def test_every_field_changes_the_id(self):
        base = transaction_id("chain-x", bytes([7] * 32), 9, b"payload")
        self.assertNotEqual(base, transaction_id("chain-y", bytes([7] * 32), 9, b"payload"))
        self.assertNotEqual(base, transaction_id("chain-x", bytes([8] * 32), 9, b"payload"))
        self.assertNotEqual(base, transaction_id("chain-x", bytes([7] * 32), 10, b"payload"))
        self.assertNotEqual(base, transaction_id("chain-x", bytes([7] * 32), 9, b"payloaD"))

    def test_framing_separates_fields(self):
        # Without length prefixes these two would hash the same bytes.
        self.assertNotEqual(
            transaction_id("ab", b"c" * 32, 1, b""), transaction_id("a", b"bc" + b"c" * 31, 1, b"")
        )


class SignEnvelopeTest(unittest.TestCase):
    def test_signature_covers_the_id(self):
        key_pem = pem(bytes([3] * 32))
        anchor = types_pb2.AnchorRecord(dataset="health/x", record_id="r", record_hash=b"\1" * 32)
        envelope = sign_envelope(key_pem, "chain-x", 4, types_pb2.Transaction(anchor_record=anchor))
        self.assertEqual(envelope.signer, public_key(key_pem))
        self.assertEqual(envelope.nonce, 4)
        self.assertEqual(envelope.chain_id, "chain-x")
        decoded = types_pb2.Transaction.FromString(envelope.payload)
        self.assertEqual(decoded.anchor_record.record_id, "r")
        tx_id = transaction_id("chain-x", envelope.signer, 4, envelope.payload)
        key = serialization.load_pem_private_key(key_pem, None)
        key.public_key().verify(envelope.signature, tx_id)  # raises if not

    def test_rejects_a_non_ed25519_key(self):
        from cryptography.hazmat.primitives.asymmetric import ec

        other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        with self.assertRaisesRegex(ValueError, "not an Ed25519 key"):
            sign_envelope(other, "c", 1, types_pb2.Transaction())


if __name__ == "__main__":
    unittest.main()
