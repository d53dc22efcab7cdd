"""The govchain-client package against a running devnet, as a department
system would use it once installed (pip install clients/python).

    python devnet_flow.py --devnet DIR

Signs and submit-and-waits an anchor, reads it back with its proof and
verifies it against DIR's genesis.json, tampers one byte and sees ProofError,
follows anchors across a closed channel without gap or repeat, and reads the
structured reason of a reused nonce. The first failed check exits with 1.
"""

import hashlib
import json
import os
import sys
import time

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import govchain_client as gc
from flow_support import CheckFailed, check, main, ok, read, step
from govchain.node.v1 import node_pb2, node_pb2_grpc
from govchain.types.v1 import types_pb2

DEPARTMENT = "health"
RPC_TIMEOUT_SECONDS = 30
ANCHORS = 6
# The follower's channel is closed after this many anchors.
CLOSE_AFTER = 3


class Devnet:
    """health's node address, certificates and signing key, and genesis."""

    def __init__(self, directory):
        with open(os.path.join(directory, "devnet.json")) as f:
            devnet = json.load(f)
        node = next(n for n in devnet["nodes"] if n["name"] == DEPARTMENT)
        certs = os.path.join(directory, devnet["certs"])
        self.address = node["url"]
        self.ca = read(certs, "ca.crt")
        self.cert = read(certs, DEPARTMENT, "client.crt")
        self.key = read(certs, DEPARTMENT, "client.key")
        self.signing_key = read(certs, DEPARTMENT, "signing.key")
        self.genesis = read(certs, "genesis.json").decode()
        self.chain_id = json.loads(self.genesis)["chain_id"]

    def connect(self):
        return gc.connect(
            self.address, self.ca, self.cert, self.key, server_name=f"{DEPARTMENT}.node.govchain"
        )


def anchor(dataset, record_id):
    record = types_pb2.AnchorRecord(
        dataset=dataset,
        record_id=record_id,
        record_hash=hashlib.sha256(record_id.encode()).digest(),
        schema="text/plain",
        record_time_ms=int(time.time() * 1000),
    )
    return types_pb2.Transaction(anchor_record=record)


def submit(devnet, channel, key_pem, transaction):
    """Signs with the next nonce, submits and waits; checks it succeeded."""
    nonce = gc.next_nonce(channel, gc.public_key(key_pem))
    envelope = gc.sign_envelope(key_pem, devnet.chain_id, nonce, transaction)
    committed = gc.submit_and_wait(channel, envelope)
    tx_id = gc.transaction_id(devnet.chain_id, envelope.signer, nonce, envelope.payload)
    check(committed.transaction_id == tx_id, "the node's transaction id differs from ours")
    check(
        committed.status == node_pb2.TRANSACTION_STATUS_COMMITTED,
        f"status {node_pb2.TransactionStatus.Name(committed.status)}",
    )
    check(
        committed.result.outcome == types_pb2.TRANSACTION_OUTCOME_SUCCESS,
        f"outcome {committed.result.outcome}: {committed.result.error}",
    )
    return envelope, committed


def prove(devnet, channel, committed):
    step("read the anchor back with prove=True and verify it against genesis.json")
    stub = node_pb2_grpc.NodeServiceStub(channel)
    response = stub.GetTransaction(
        node_pb2.GetTransactionRequest(transaction_id=committed.transaction_id, prove=True),
        timeout=RPC_TIMEOUT_SECONDS,
    )
    proven = gc.verify_transaction_proof(response, devnet.genesis, committed.transaction_id)
    check(proven.height == committed.block_height, f"proven height {proven.height}")
    check(proven.block_hash == committed.block_hash, "proven block hash differs")
    check(proven.signers >= proven.quorum == 3, f"{proven.signers} signers, quorum {proven.quorum}")
    ok(f"height {proven.height}, index {proven.index} of {proven.tree_size}, {proven.signers} signers")
    return response


def tamper(devnet, response):
    step("tamper one byte: ProofError names the item")
    cases = [
        ("envelope id", lambda r: flip(r.envelope, "payload")),
        ("envelope signature", lambda r: flip(r.envelope, "signature")),
        ("commit signature", lambda r: flip(r.proof.certificate.signatures[0], "signature")),
        ("certificate block hash", lambda r: flip(r.proof, "header", -1)),
    ]
    for item, change in cases:
        tampered = node_pb2.GetTransactionResponse()
        tampered.CopyFrom(response)
        change(tampered)
        try:
            gc.verify_transaction_proof(tampered, devnet.genesis)
        except gc.ProofError as err:
            check(err.item == item, f"tampering the {item} was refused as {err}")
            ok(f"{err}")
            continue
        raise CheckFailed(f"a tampered {item} verified")


def flip(message, field, at=0):
    data = bytearray(getattr(message, field))
    data[at] ^= 1
    setattr(message, field, bytes(data))


def follow_across_reconnect(devnet, from_height, expected):
    step(f"follow anchor_record across a closed channel (after {CLOSE_AFTER})")
    channels = []

    def open_channel():
        channels.append(devnet.connect())
        return channels[-1]

    dataset = expected[0][1]
    wanted = node_pb2.TransactionFilter(kinds=["anchor_record"], datasets=[dataset])
    seen = []
    stream = gc.follow(open_channel, wanted, from_height=from_height)
    for transaction in stream:
        check(transaction.kind == "anchor_record", f"kind {transaction.kind!r} passed the filter")
        seen.append(transaction.transaction_id)
        position = (transaction.position.height, transaction.position.index)
        print(f"  got {transaction.transaction_id.hex()[:16]} at {position}", flush=True)
        if len(seen) == CLOSE_AFTER:
            channels[-1].close()
        if len(seen) == len(expected):
            break
    stream.close()
    for channel in channels:
        channel.close()
    check(len(channels) == 2, f"{len(channels)} channels opened, expected one reconnect")
    check(seen == [tx_id for tx_id, _ in expected], "the followed ids differ from the submitted")
    ok(f"{len(seen)} anchors in order over {len(channels)} channels, no gap, no repeat")


def reused_nonce(devnet, channel, used_nonce):
    step("submit with a used nonce: reason NONCE_USED")
    envelope = gc.sign_envelope(
        devnet.signing_key, devnet.chain_id, used_nonce, anchor("health/python-client", "replayed")
    )
    try:
        gc.submit_and_wait(channel, envelope)
    except grpc.RpcError as err:
        check(err.code() == grpc.StatusCode.FAILED_PRECONDITION, f"code {err.code().name}")
        reason = gc.error_reason(err)
        check(reason == "NONCE_USED", f"reason {reason!r}: {err.details()}")
        ok(f"FAILED_PRECONDITION, reason {reason}")
        return
    raise CheckFailed(f"nonce {used_nonce} was accepted twice")


def run(directory):
    devnet = Devnet(directory)
    channel = devnet.connect()
    dataset = f"{DEPARTMENT}/python-client-{os.urandom(4).hex()}"

    step("sign and submit-and-wait an anchor")
    first, committed = submit(devnet, channel, devnet.signing_key, anchor(dataset, "r0"))
    ok(f"{committed.transaction_id.hex()} at height {committed.block_height}")
    response = prove(devnet, channel, committed)
    tamper(devnet, response)

    step(f"{ANCHORS - 1} more anchors, and a citizen's create_identity between them")
    expected = [(committed.transaction_id, dataset)]
    citizen = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for n in range(1, ANCHORS):
        _, done = submit(devnet, channel, devnet.signing_key, anchor(dataset, f"r{n}"))
        expected.append((done.transaction_id, dataset))
        if n == 2:
            submit(devnet, channel, citizen, types_pb2.Transaction(create_identity={}))
    ok(f"{len(expected)} anchors committed")
    follow_across_reconnect(devnet, committed.block_height, expected)
    reused_nonce(devnet, channel, first.nonce)
    channel.close()


if __name__ == "__main__":
    sys.exit(main(run, __doc__))
