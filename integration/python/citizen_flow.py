"""A legacy department system wired into govchain with nothing but proto/.

Runs the citizen identity flow against a running devnet, using only the
Python client that grpcio-tools generates from proto/, grpcio over mutual TLS
with a department's client certificate, and `cryptography` for Ed25519.
Every format it computes (transaction id, attribute commitment, login
signature, did:key) follows the comments in the .proto files.

    python citizen_flow.py --devnet DIR --generated DIR

DIR/devnet.json names the nodes; DIR/certs/<department>/ holds each
department's client certificate and signing key. Each step is printed; the
first failed check exits with status 1.
"""

import argparse
import hashlib
import json
import os
import struct
import sys
import time

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# Bound on every RPC, in seconds.
RPC_TIMEOUT_SECONDS = 30
# Bound on waiting for a transaction to commit, in seconds.
COMMIT_TIMEOUT_SECONDS = 60
COMMIT_POLL_SECONDS = 0.1
# Upload message size: the proto allows up to 1 MiB of data per message.
UPLOAD_CHUNK_BYTES = 256 * 1024
MESSAGE_BYTES_MAX = 64 * 1024 * 1024
PHOTO_BYTES = 300 * 1024

# Domain tags, from the proto comments.
DOMAIN_TRANSACTION = b"govchain/tx/v1"
DOMAIN_ATTRIBUTE = b"govchain/attribute/v1"
DOMAIN_CITIZEN_READ = b"govchain/citizen-read/v1"
LOGIN_SIGNING_PREFIX = b"govchain/login/v1\n"

# The generated modules are imported in main(), once --generated is on the
# path.
types_pb2 = node_pb2 = node_pb2_grpc = None
blob_pb2 = blob_pb2_grpc = identity_pb2 = identity_pb2_grpc = None


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def step(text):
    print(f"step: {text}", flush=True)


def ok(text):
    print(f"  ok: {text}", flush=True)


# --- Formats from the proto comments ---------------------------------------


def framed(data):
    """u32be(len(data)) || data: a length-prefixed field."""
    return struct.pack(">I", len(data)) + data


def transaction_id(chain_id, signer, nonce, payload):
    """The transaction id (TransactionEnvelope in types.proto).

    The domain tag, chain id, signer and payload are each length-prefixed,
    as DomainHasher frames every variable-length field; the nonce is u64be.
    """
    digest = hashlib.sha256()
    digest.update(framed(DOMAIN_TRANSACTION))
    digest.update(framed(chain_id.encode()))
    digest.update(framed(signer))
    digest.update(struct.pack(">Q", nonce))
    digest.update(framed(payload))
    return digest.digest()


def attribute_commitment(salt, value):
    """SealedAttribute in types.proto: u32be(21) is len("govchain/attribute/v1")."""
    digest = hashlib.sha256()
    digest.update(framed(DOMAIN_ATTRIBUTE))
    digest.update(framed(salt))
    digest.update(framed(value))
    return digest.digest()


def citizen_read_signature(chain_id, rpc, citizen_key, citizen, request_time_ms):
    """The citizen's signature of its own GetIdentity or ListAccesses
    request (identity.proto): Ed25519 over SHA-256 of the framed domain
    tag, chain id, RPC name and citizen key, then u64be(request_time_ms)."""
    digest = hashlib.sha256()
    digest.update(framed(DOMAIN_CITIZEN_READ))
    digest.update(framed(chain_id.encode()))
    digest.update(framed(rpc.encode()))
    digest.update(framed(citizen))
    digest.update(struct.pack(">Q", request_time_ms))
    return citizen_key.sign(digest.digest())


BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58btc(data):
    number = int.from_bytes(data, "big")
    text = ""
    while number > 0:
        number, digit = divmod(number, 58)
        text = BASE58_ALPHABET[digit] + text
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + text


def did_key(public_key):
    """W3C did:key of an Ed25519 key: multicodec 0xed 0x01, base58btc 'z'."""
    return "did:key:z" + base58btc(b"\xed\x01" + public_key)


def raw_public_key(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def now_ms():
    return int(time.time() * 1000)


# --- Department signing keys -----------------------------------------------


def load_signing_key(pem, what):
    """A department's Ed25519 signing key from its PKCS#8 PEM file (the
    RFC 8410 form OpenSSL writes), with the standard loader."""
    key = serialization.load_pem_private_key(pem, None)
    check(isinstance(key, Ed25519PrivateKey), f"{what} is not an Ed25519 key")
    return key


# --- The devnet and its departments ----------------------------------------


class Department:
    """A department's node, client certificate and signing key."""

    def __init__(self, devnet_dir, devnet, name):
        node = next((n for n in devnet["nodes"] if n["name"] == name), None)
        check(node is not None, f"devnet.json has no node {name!r}")
        certs = os.path.join(devnet_dir, devnet["certs"])
        folder = os.path.join(certs, name)
        with open(os.path.join(certs, "ca.crt"), "rb") as f:
            ca = f.read()
        with open(os.path.join(folder, "client.crt"), "rb") as f:
            certificate = f.read()
        with open(os.path.join(folder, "client.key"), "rb") as f:
            key = f.read()
        with open(os.path.join(folder, "signing.key"), "rb") as f:
            self.signing_key = load_signing_key(f.read(), f"{name}'s signing.key")
        self.name = name
        self.public_key = raw_public_key(self.signing_key)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=certificate
        )
        target = node["url"].removeprefix("https://")
        # Node certificates name "<department>.node.govchain" (pki
        # node_dns_name), not the loopback address we dial.
        options = [
            ("grpc.ssl_target_name_override", f"{name}.node.govchain"),
            ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
            ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
        ]
        self.channel = grpc.secure_channel(target, credentials, options)
        grpc.channel_ready_future(self.channel).result(timeout=RPC_TIMEOUT_SECONDS)
        self.node = node_pb2_grpc.NodeServiceStub(self.channel)
        self.blobs = blob_pb2_grpc.BlobServiceStub(self.channel)
        self.identity = identity_pb2_grpc.IdentityServiceStub(self.channel)


class Chain:
    """Signs and submits transactions, and waits for them to commit."""

    def __init__(self, chain_id):
        self.chain_id = chain_id

    def envelope(self, via, key, body):
        """Signs `body` (a dict with one Transaction field) with `key`,
        using the next nonce that `via`'s node reports for the signer."""
        signer = raw_public_key(key)
        account = via.node.GetAccount(
            node_pb2.GetAccountRequest(public_key=signer), timeout=RPC_TIMEOUT_SECONDS
        )
        nonce = account.next_nonce
        payload = types_pb2.Transaction(**body).SerializeToString()
        tx_id = transaction_id(self.chain_id, signer, nonce, payload)
        envelope = types_pb2.TransactionEnvelope(
            payload=payload,
            signer=signer,
            signature=key.sign(tx_id),
            chain_id=self.chain_id,
            nonce=nonce,
        )
        return envelope, tx_id

    def submit(self, via, key, body):
        """Submits to `via`'s node; returns the transaction id."""
        envelope, tx_id = self.envelope(via, key, body)
        response = via.node.SubmitTransaction(
            node_pb2.SubmitTransactionRequest(envelope=envelope),
            timeout=RPC_TIMEOUT_SECONDS,
        )
        check(
            response.transaction_id == tx_id,
            f"the node's transaction id {response.transaction_id.hex()} "
            f"differs from ours {tx_id.hex()}",
        )
        return tx_id

    def wait_committed(self, tx_id, *nodes, refused=False):
        """Polls GetTransaction on each node until the transaction is
        committed there, and checks that it succeeded (or, with `refused`,
        that it was ordered but failed)."""
        for department in nodes:
            deadline = time.monotonic() + COMMIT_TIMEOUT_SECONDS
            while True:
                try:
                    status = department.node.GetTransaction(
                        node_pb2.GetTransactionRequest(transaction_id=tx_id),
                        timeout=RPC_TIMEOUT_SECONDS,
                    )
                    if status.status == node_pb2.TRANSACTION_STATUS_COMMITTED:
                        break
                except grpc.RpcError as err:
                    # The node has not seen it yet (forwarding is async).
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                check(
                    time.monotonic() < deadline,
                    f"transaction {tx_id.hex()} did not commit on {department.name} "
                    f"within {COMMIT_TIMEOUT_SECONDS} s",
                )
                time.sleep(COMMIT_POLL_SECONDS)
            outcome = status.result.outcome
            check(
                (outcome == types_pb2.TRANSACTION_OUTCOME_SUCCESS) != refused,
                f"transaction {tx_id.hex()} committed with outcome "
                f"{types_pb2.TransactionOutcome.Name(outcome)} {status.result.error!r}",
            )
        return status.block_height

    def transact(self, via, key, body, *also_on):
        """Submits, then waits until committed on `via` and `also_on`."""
        tx_id = self.submit(via, key, body)
        height = self.wait_committed(tx_id, via, *also_on)
        return tx_id, height


def expect_rpc_error(call, code, fragment=None):
    """Runs `call`, which must fail with `code` (and `fragment` in the
    details); returns the details."""
    try:
        call()
    except grpc.RpcError as err:
        check(
            err.code() == code,
            f"expected {code.name}, got {err.code().name}: {err.details()}",
        )
        details = err.details() or ""
        if fragment is not None:
            check(
                fragment in details,
                f"expected {fragment!r} in the {code.name} details: {details!r}",
            )
        return details
    raise CheckFailed(f"expected {code.name}, but the call succeeded")


# --- The flow --------------------------------------------------------------


def upload(department, data, receipt_for_citizen=b""):
    """Streams `data`: the header first, `finish` on the last message. With
    a citizen's public key, the node answers with its receipt for the upload,
    which the citizen's DeclareAttribute must carry."""

    def requests():
        header = blob_pb2.UploadHeader(receipt_for_citizen=receipt_for_citizen)
        yield blob_pb2.UploadRequest(header=header)
        starts = range(0, len(data), UPLOAD_CHUNK_BYTES)
        for start in starts:
            chunk = data[start : start + UPLOAD_CHUNK_BYTES]
            yield blob_pb2.UploadRequest(data=chunk, finish=start == starts[-1])
        if not starts:
            yield blob_pb2.UploadRequest(finish=True)

    return department.blobs.Upload(requests(), timeout=RPC_TIMEOUT_SECONDS)


def read_attribute(department, envelope):
    """Calls ReadAttribute and reassembles the streamed chunks."""
    blob = bytearray()
    size = None
    for chunk in department.identity.ReadAttribute(
        identity_pb2.ReadAttributeRequest(envelope=envelope),
        timeout=RPC_TIMEOUT_SECONDS * 2,
    ):
        if size is None:
            size = chunk.size_bytes
        check(
            chunk.offset == len(blob),
            f"chunk at offset {chunk.offset}, expected {len(blob)}",
        )
        blob.extend(chunk.data)
    check(size is not None, "ReadAttribute sent no chunk")
    check(len(blob) == size, f"got {len(blob)} bytes of a {size}-byte blob")
    return bytes(blob)


def identity_state(department, citizen):
    return department.identity.GetIdentity(
        identity_pb2.GetIdentityRequest(public_key=citizen),
        timeout=RPC_TIMEOUT_SECONDS,
    )


def attribute_state(department, citizen, name):
    state = identity_state(department, citizen)
    found = [a for a in state.attributes if a.attribute.name == name]
    check(len(found) == 1, f"GetIdentity lists {len(found)} attributes {name!r}")
    return found[0]


def list_accesses(department, citizen, chain_id=None, citizen_key=None):
    """The accesses the department sees (its own), or, with the citizen's
    key, every access: the request is then signed as the citizen's."""
    request = identity_pb2.ListAccessesRequest(public_key=citizen)
    if citizen_key is not None:
        request.request_time_ms = int(time.time() * 1000)
        request.citizen_signature = citizen_read_signature(
            chain_id, "ListAccesses", citizen_key, citizen, request.request_time_ms
        )
    return department.identity.ListAccesses(request, timeout=RPC_TIMEOUT_SECONDS).accesses


class Flow:
    """The citizen flow, one method per group of steps; what a step
    learns (keys, CIDs, consent ids) is kept on the object."""

    def __init__(self, devnet_dir):
        with open(os.path.join(devnet_dir, "devnet.json")) as f:
            devnet = json.load(f)
        self.chain = Chain(devnet["chain_id"])
        self.civil = Department(devnet_dir, devnet, "civil")
        self.tax = Department(devnet_dir, devnet, "tax")
        self.police = Department(devnet_dir, devnet, "police")
        status = self.civil.node.GetStatus(
            node_pb2.GetStatusRequest(), timeout=RPC_TIMEOUT_SECONDS
        )
        check(status.node == "civil", f"civil's node says it is {status.node!r}")
        check(status.chain_id == self.chain.chain_id, f"chain id {status.chain_id!r}")
        ok(f"connected over mTLS to chain {status.chain_id} at height {status.height}")
        self.citizen_key = Ed25519PrivateKey.generate()
        self.citizen = raw_public_key(self.citizen_key)

    def close(self):
        for department in (self.civil, self.tax, self.police):
            department.channel.close()

    def bulk_identities(self):
        step("create 20 identities in one SubmitTransactions call, one of them forged")
        envelopes, ids = [], []
        for _ in range(20):
            key = Ed25519PrivateKey.generate()
            envelope, tx_id = self.chain.envelope(
                self.civil, key, {"create_identity": types_pb2.CreateIdentity()}
            )
            envelopes.append(envelope)
            ids.append(tx_id)
        envelopes[7].signature = bytes([envelopes[7].signature[0] ^ 1]) + envelopes[7].signature[1:]
        response = self.civil.node.SubmitTransactions(
            node_pb2.SubmitTransactionsRequest(envelopes=envelopes),
            timeout=RPC_TIMEOUT_SECONDS,
        )
        check(len(response.results) == 20, f"{len(response.results)} results for 20 envelopes")
        for i, (result, tx_id) in enumerate(zip(response.results, ids)):
            check(result.transaction_id == tx_id, f"result {i} names another transaction")
            if i == 7:
                check(
                    result.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
                    and "signature" in result.message,
                    f"the forged envelope got {result.code} {result.message!r}",
                )
            else:
                check(result.code == 0 and not result.message, f"envelope {i}: {result}")
        for i, tx_id in enumerate(ids):
            if i != 7:
                self.chain.wait_committed(tx_id, self.civil)
        ok("19 identities committed, the forged one refused with its reason")

    def create_identity(self):
        step("create a citizen identity")
        identity_tx, height = self.chain.transact(
            self.civil, self.citizen_key, {"create_identity": types_pb2.CreateIdentity()}
        )
        record = identity_state(self.civil, self.citizen).identity
        check(record.public_key == self.citizen, "GetIdentity returns another key")
        expected = did_key(self.citizen)
        check(record.did == expected, f"did {record.did!r} != {expected!r}")
        check(record.transaction_id == identity_tx, "identity transaction id differs")
        ok(f"{record.did} committed at height {height}")

    def upload_photo(self):
        step("upload a sealed photo to civil's blob store")
        self.photo = os.urandom(PHOTO_BYTES)
        salt = os.urandom(32)
        sealed = types_pb2.SealedAttribute(salt=salt, media_type="image/jpeg", value=self.photo)
        self.blob = sealed.SerializeToString()
        self.commitment = attribute_commitment(salt, self.photo)
        uploaded = upload(self.civil, self.blob, receipt_for_citizen=self.citizen)
        size = len(self.blob)
        check(len(uploaded.holder_receipt) == 64, "the upload for a citizen has no receipt")
        self.receipt = uploaded.holder_receipt
        check(uploaded.size_bytes == size, f"uploaded {uploaded.size_bytes} of {size} bytes")
        check(uploaded.cid.startswith("b"), f"CID {uploaded.cid!r} is not base32 CIDv1")
        self.cid = uploaded.cid
        stat = self.stat_photo()
        check(stat.size_bytes == size, f"Stat says {stat.size_bytes} bytes")
        check(not stat.personal, "the blob is personal before any declaration")
        ok(f"{self.cid}, {size} bytes")

    def citizen_accesses(self):
        """Every access, asked through civil's portal with the citizen's
        signature."""
        return list_accesses(self.civil, self.citizen, self.chain.chain_id, self.citizen_key)

    def stat_photo(self):
        return self.civil.blobs.Stat(
            blob_pb2.StatRequest(cid=self.cid), timeout=RPC_TIMEOUT_SECONDS
        )

    def declare_photo(self):
        step("declare the photo attribute (holder civil)")
        declare = types_pb2.DeclareAttribute(
            name="photo",
            cid=self.cid,
            commitment=self.commitment,
            holder="civil",
            size_bytes=len(self.blob),
            holder_receipt=self.receipt,
        )
        self.chain.transact(self.civil, self.citizen_key, {"declare_attribute": declare})
        state = attribute_state(self.civil, self.citizen, "photo")
        check(state.attribute.cid == self.cid, "declared CID differs")
        check(state.attribute.commitment == self.commitment, "declared commitment differs")
        check(state.attribute.version == 1, f"version {state.attribute.version}")
        check(not state.attested, "attested before any attestation")
        check(self.stat_photo().personal, "the declared blob is not marked personal")
        ok("declared; the chain holds the CID and the commitment")

    def attest_photo(self):
        step("attest the photo with civil's signing key")
        # The commitment to attest is the one on chain, as GetIdentity shows.
        on_chain = attribute_state(self.civil, self.citizen, "photo").attribute.commitment
        self.attest = types_pb2.AttestAttribute(
            citizen=self.citizen, name="photo", commitment=on_chain
        )
        self.chain.transact(self.civil, self.civil.signing_key, {"attest_attribute": self.attest})
        state = attribute_state(self.civil, self.citizen, "photo")
        check(state.attested, "the photo is not attested")
        attesters = [a.department for a in state.attestations]
        check(attesters == ["civil"], f"attested by {attesters}")
        ok("attested by civil")

    def grant_consent(self, department, purpose):
        """Grants `department` the photo for `purpose`, for an hour, and
        waits until `department`'s node has it too: that node checks the
        consent when it admits an access or completes a login."""
        grant = types_pb2.GrantConsent(
            department=department.name,
            attributes=["photo"],
            purpose=purpose,
            expires_ms=now_ms() + 3600 * 1000,
            jurisdiction="EU",
        )
        consent_id, _ = self.chain.transact(
            self.civil, self.citizen_key, {"grant_consent": grant}, department
        )
        return consent_id

    def consent_to_tax(self):
        step("grant consent to tax for the photo")
        self.purpose = "benefit-eligibility-check"
        self.consent_id = self.grant_consent(self.tax, self.purpose)
        consents = identity_state(self.tax, self.citizen).consents
        check([c.consent_id for c in consents] == [self.consent_id], "consent not listed")
        check(consents[0].department == "tax", f"consent for {consents[0].department!r}")
        check(not consents[0].revoked, "the new consent is revoked")
        ok(f"consent {self.consent_id.hex()}")

    def access_envelope(self):
        access = types_pb2.RecordAccess(
            citizen=self.citizen,
            attribute="photo",
            consent_id=self.consent_id,
            purpose=self.purpose,
        )
        return self.chain.envelope(self.tax, self.tax.signing_key, {"record_access": access})

    def read_as_tax(self):
        step("read the photo as tax, under the consent")
        envelope, self.access_tx = self.access_envelope()
        received = read_attribute(self.tax, envelope)
        # The listing asks civil, which may apply the block a moment
        # after tax, where the read waited for it.
        self.chain.wait_committed(self.access_tx, self.civil)
        check(received == self.blob, "the released blob differs from the uploaded one")
        opened = types_pb2.SealedAttribute()
        opened.ParseFromString(received)
        check(opened.value == self.photo, "the released photo differs from the original")
        check(opened.media_type == "image/jpeg", f"media type {opened.media_type!r}")
        check(
            attribute_commitment(opened.salt, opened.value) == self.commitment,
            "the released value does not match the commitment on chain",
        )
        ok(f"{len(opened.value)} bytes, commitment matches")

    def list_one_access(self):
        step("the citizen lists accesses: one, by tax")
        accesses = self.citizen_accesses()
        check(len(accesses) == 1, f"{len(accesses)} accesses listed")
        record = accesses[0]
        check(record.department == "tax", f"access by {record.department!r}")
        check(record.attribute == "photo", f"access to {record.attribute!r}")
        check(record.consent_id == self.consent_id, "access under another consent")
        check(record.purpose == self.purpose, f"purpose {record.purpose!r}")
        check(record.cid == self.cid, f"access released {record.cid!r}")
        check(record.transaction_id == self.access_tx, "access transaction id differs")
        check(record.sequence == 1, f"sequence {record.sequence}")
        ok(f"access at height {record.block_height}")

    def revoke_and_refuse(self):
        step("revoke the consent")
        revoke = types_pb2.RevokeConsent(consent_id=self.consent_id)
        self.chain.transact(self.civil, self.citizen_key, {"revoke_consent": revoke}, self.tax)
        consents = identity_state(self.tax, self.citizen).consents
        check(consents[0].revoked, "the consent is not shown revoked")
        ok("revoked")

        step("read again as tax: denied")
        envelope, refused_tx = self.access_envelope()
        details = expect_rpc_error(
            lambda: read_attribute(self.tax, envelope),
            grpc.StatusCode.PERMISSION_DENIED,
            "revoked",
        )
        self.chain.wait_committed(refused_tx, self.civil, refused=True)
        # The attempt is in the citizen's log, as a refusal that released
        # nothing; civil, which never read, sees none of it.
        accesses = self.citizen_accesses()
        check(len(accesses) == 2, f"{len(accesses)} log entries after the denied read")
        check(not accesses[0].refused, "the first read is shown refused")
        refusal = accesses[1]
        check(refusal.refused, "the denied read is not in the log as a refusal")
        check(refusal.department == "tax", f"refusal by {refusal.department!r}")
        check(refusal.cid == "", "a refusal names a released blob")
        check("revoked" in refusal.refusal, f"refusal reason {refusal.refusal!r}")
        by_civil = list_accesses(self.civil, self.citizen)
        check(len(by_civil) == 0, f"civil, which never read, sees {len(by_civil)} accesses")
        ok(f"PERMISSION_DENIED: {details}; the attempt is in the citizen's log")

        step("tax tries to attest the photo: denied")
        details = expect_rpc_error(
            lambda: self.chain.submit(
                self.tax, self.tax.signing_key, {"attest_attribute": self.attest}
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        ok(f"PERMISSION_DENIED: {details}")

    def challenge(self):
        return self.police.identity.CreateLoginChallenge(
            identity_pb2.CreateLoginChallengeRequest(
                requested_attributes=["photo"], ttl_seconds=120, website="police.gov.example"
            ),
            timeout=RPC_TIMEOUT_SECONDS,
        )

    def complete(self, payload, key):
        """The citizen's device signs the payload with `key`; police's
        website completes the login."""
        signature = key.sign(LOGIN_SIGNING_PREFIX + payload.encode())
        return self.police.identity.CompleteLogin(
            identity_pb2.CompleteLoginRequest(
                qr_payload=payload, public_key=self.citizen, signature=signature
            ),
            timeout=RPC_TIMEOUT_SECONDS,
        )

    def qr_login(self):
        step("QR login at police: consent first")
        self.grant_consent(self.police, "website-login")
        ok("police may see the photo")

        step("QR login: police asks for a challenge")
        login = self.challenge()
        check(login.qr_payload != "", "empty QR payload")
        check(login.qr_payload.isprintable(), f"QR payload {login.qr_payload!r}")
        svg = login.qr_svg.lstrip()
        check(svg.startswith(("<?xml", "<svg")), f"qr_svg starts {svg[:40]!r}")
        check(login.relying_party == "police", f"relying party {login.relying_party!r}")
        check(len(login.nonce) > 0, "no nonce")
        check(login.expires_ms > now_ms(), f"expires at {login.expires_ms}")
        ok(f"payload {login.qr_payload!r}, {len(login.qr_svg)}-byte SVG")

        step("QR login: the citizen signs, police completes")
        result = self.complete(login.qr_payload, self.citizen_key)
        check(result.did == did_key(self.citizen), f"did {result.did!r}")
        check(result.public_key == self.citizen, "login for another key")
        check(result.relying_party == "police", f"relying party {result.relying_party!r}")
        check([c.name for c in result.claims] == ["photo"], f"claims {result.claims}")
        claim = result.claims[0]
        check(claim.commitment == self.commitment, "the claim's commitment differs")
        check(claim.cid == self.cid, f"the claim's CID {claim.cid!r}")
        check("civil" in claim.attested_by, f"attested by {list(claim.attested_by)}")
        ok(f"logged in {result.did}, photo attested by {list(claim.attested_by)}")

        step("QR login: the same signed payload again is a replay")
        details = expect_rpc_error(
            lambda: self.complete(login.qr_payload, self.citizen_key),
            grpc.StatusCode.ALREADY_EXISTS,
        )
        ok(f"ALREADY_EXISTS: {details}")

        step("QR login: a bad signature on a fresh challenge")
        fresh = self.challenge()
        check(fresh.nonce != login.nonce, "the fresh challenge reuses the nonce")
        impostor = Ed25519PrivateKey.generate()
        details = expect_rpc_error(
            lambda: self.complete(fresh.qr_payload, impostor), grpc.StatusCode.UNAUTHENTICATED
        )
        ok(f"UNAUTHENTICATED: {details}")


def run(devnet_dir):
    flow = Flow(devnet_dir)
    flow.bulk_identities()
    flow.create_identity()
    flow.upload_photo()
    flow.declare_photo()
    flow.attest_photo()
    flow.consent_to_tax()
    flow.read_as_tax()
    flow.list_one_access()
    flow.revoke_and_refuse()
    flow.qr_login()
    flow.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devnet", required=True, help="devnet directory (devnet.json)")
    parser.add_argument("--generated", required=True, help="grpc_tools.protoc output")
    args = parser.parse_args()
    sys.path.insert(0, args.generated)
    global types_pb2, node_pb2, node_pb2_grpc, blob_pb2, blob_pb2_grpc
    global identity_pb2, identity_pb2_grpc
    from govchain.blob.v1 import blob_pb2, blob_pb2_grpc
    from govchain.identity.v1 import identity_pb2, identity_pb2_grpc
    from govchain.node.v1 import node_pb2, node_pb2_grpc
    from govchain.types.v1 import types_pb2

    started = time.monotonic()
    try:
        run(args.devnet)
    except CheckFailed as failure:
        print(f"FAILED: {failure}", flush=True)
        return 1
    except grpc.RpcError as err:
        print(f"FAILED: unexpected {err.code().name}: {err.details()}", flush=True)
        return 1
    except grpc.FutureTimeoutError:
        print("FAILED: a node did not accept a connection in time", flush=True)
        return 1
    print(f"all steps passed in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
