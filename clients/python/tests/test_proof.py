"""verify_transaction_proof against a block built and certified here, with
four validator keys from fixed seeds, and each item tampered in turn."""

import copy
import hashlib
import json
import unittest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from govchain.node.v1 import node_pb2
from govchain.types.v1 import types_pb2
from govchain_client import ProofError, sign_envelope, transaction_id, verify_transaction_proof
from govchain_client.proof import block_hash, commit_signing_bytes
from test_merkle import mth, path

CHAIN = "test-chain"
HEIGHT = 9
VIEW = 3
VALIDATOR_KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i] * 32)) for i in range(1, 5)]


def raw(key):
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


GENESIS = json.dumps(
    {
        "chain_id": CHAIN,
        "validators": [
            {"name": f"v{i}", "consensus_public_key": raw(k).hex(), "tls_identity": ""}
            for i, k in enumerate(VALIDATOR_KEYS)
        ],
    }
)


def signer_pem():
    return Ed25519PrivateKey.from_private_bytes(bytes([9] * 32)).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def envelope(nonce):
    anchor = types_pb2.AnchorRecord(
        dataset="health/x", record_id=f"r{nonce}", record_hash=hashlib.sha256(b"%d" % nonce).digest()
    )
    return sign_envelope(signer_pem(), CHAIN, nonce, types_pb2.Transaction(anchor_record=anchor))


def answer(count, index, signers=3):
    """An honest node's answer for transaction `index` of a block of `count`,
    certified by the first `signers` validators."""
    envelopes = [envelope(n) for n in range(1, count + 1)]
    ids = [transaction_id(e.chain_id, e.signer, e.nonce, e.payload) for e in envelopes]
    header = types_pb2.BlockHeader(
        chain_id=CHAIN,
        height=HEIGHT,
        parent_hash=b"\1" * 32,
        transactions_root=mth(ids),
        state_root=b"\2" * 32,
        timestamp_ms=1000,
        view=VIEW,
        transaction_count=count,
    ).SerializeToString()
    hash_ = block_hash(header)
    message = commit_signing_bytes(CHAIN, VIEW, HEIGHT, hash_)
    certificate = types_pb2.CommitCertificate(height=HEIGHT, view=VIEW, block_hash=hash_)
    for i, key in enumerate(VALIDATOR_KEYS[:signers]):
        certificate.signatures.add(validator_index=i, signature=key.sign(message))
    return node_pb2.GetTransactionResponse(
        transaction_id=ids[index],
        status=node_pb2.TRANSACTION_STATUS_COMMITTED,
        block_height=HEIGHT,
        block_hash=hash_,
        index=index,
        envelope=envelopes[index],
        proof=types_pb2.InclusionProof(
            header=header,
            certificate=certificate,
            leaf_index=index,
            tree_size=count,
            audit_path=path(index, ids),
        ),
    )


def flip(data, at=0):
    data = bytearray(data)
    data[at] ^= 1
    return bytes(data)


class ProofTest(unittest.TestCase):
    def assert_refused(self, response, item):
        with self.assertRaises(ProofError) as caught:
            verify_transaction_proof(response, GENESIS)
        self.assertEqual(caught.exception.item, item, str(caught.exception))

    def test_honest_answers_verify(self):
        for count, index in [(1, 0), (2, 1), (5, 4), (7, 2)]:
            with self.subTest(count=count, index=index):
                response = answer(count, index)
                proven = verify_transaction_proof(response, GENESIS)
                self.assertEqual(proven.transaction_id, response.transaction_id)
                self.assertEqual((proven.height, proven.index, proven.tree_size), (HEIGHT, index, count))
                self.assertEqual((proven.signers, proven.quorum), (3, 3))

    def test_genesis_as_dict(self):
        self.assertEqual(verify_transaction_proof(answer(3, 1), json.loads(GENESIS)).index, 1)

    def test_tampered_payload(self):
        response = answer(5, 2)
        response.envelope.payload = flip(response.envelope.payload, 3)
        self.assert_refused(response, "envelope id")

    def test_tampered_envelope_signature(self):
        response = answer(5, 2)
        response.envelope.signature = flip(response.envelope.signature)
        self.assert_refused(response, "envelope signature")

    def test_tampered_header(self):
        response = answer(5, 2)
        # The last byte is transaction_count's value: it still decodes.
        response.proof.header = flip(response.proof.header, len(response.proof.header) - 1)
        self.assert_refused(response, "certificate block hash")

    def test_tampered_commit_signature(self):
        response = answer(5, 2)
        signature = response.proof.certificate.signatures[1]
        signature.signature = flip(signature.signature, 10)
        self.assert_refused(response, "commit signature")

    def test_too_few_signers(self):
        self.assert_refused(answer(5, 2, signers=2), "quorum")

    def test_a_repeated_signer(self):
        response = answer(5, 2, signers=2)
        response.proof.certificate.signatures.append(
            copy.deepcopy(response.proof.certificate.signatures[0])
        )
        self.assert_refused(response, "commit signature")

    def test_another_chain(self):
        genesis = json.loads(GENESIS)
        genesis["chain_id"] = "other-chain"
        with self.assertRaises(ProofError) as caught:
            verify_transaction_proof(answer(2, 0), genesis)
        self.assertEqual(caught.exception.item, "header")

    def test_tampered_audit_path(self):
        for at in range(3):
            response = answer(5, 2)
            response.proof.audit_path[at] = flip(response.proof.audit_path[at], 31)
            with self.subTest(at=at):
                self.assert_refused(response, "audit path")

    def test_tree_size_other_than_the_header_count(self):
        response = answer(7, 5)
        response.proof.tree_size = 8
        self.assert_refused(response, "tree size")

    def test_leaf_index_moved(self):
        response = answer(5, 2)
        response.proof.leaf_index = 3
        self.assert_refused(response, "audit path")

    def test_claims_other_than_the_proven(self):
        response = answer(5, 2)
        response.block_height = HEIGHT + 1
        self.assert_refused(response, "block height")
        response = answer(5, 2)
        response.index = 3
        self.assert_refused(response, "index")

    def test_missing_proof(self):
        response = answer(2, 0)
        response.ClearField("proof")
        self.assert_refused(response, "proof")


if __name__ == "__main__":
    unittest.main()
