"""Calls to a node over mutual TLS: the channel, submit-and-wait, structured
error reasons and a transaction stream that resumes where it broke."""

import time

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from govchain.node.v1 import node_pb2, node_pb2_grpc

# Bound on a unary call, in seconds.
RPC_TIMEOUT_SECONDS = 30
# Bound on SubmitTransactionAndWait: the node's own wait is 60 s without a
# deadline.
COMMIT_TIMEOUT_SECONDS = 60
MESSAGE_BYTES_MAX = 64 * 1024 * 1024
# follow(): consecutive reconnects without a new transaction before giving up,
# and the pause before each.
RECONNECTS_MAX = 8
RECONNECT_PAUSE_SECONDS = 0.5
# A broken stream, worth resuming: the node went away or the channel closed.
RESUMABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
ERROR_DOMAIN = "govchain"


def connect(address, ca, cert, key, server_name=None, ready_timeout_seconds=RPC_TIMEOUT_SECONDS):
    """A mutual-TLS channel to `address` ("host:port" or "https://host:port")
    with the consortium CA and a department's client certificate and key
    (PEM bytes). `server_name` is the name in the node's certificate,
    "<department>.node.govchain", when it differs from the dialled host."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    options = [
        ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
        ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    channel = grpc.secure_channel(address.removeprefix("https://"), credentials, options)
    grpc.channel_ready_future(channel).result(timeout=ready_timeout_seconds)
    return channel


def next_nonce(channel, signer):
    """The nonce the signer (raw 32-byte public key) should use next."""
    account = node_pb2_grpc.NodeServiceStub(channel).GetAccount(
        node_pb2.GetAccountRequest(public_key=signer), timeout=RPC_TIMEOUT_SECONDS
    )
    return account.next_nonce


def submit_and_wait(channel, envelope, timeout_seconds=COMMIT_TIMEOUT_SECONDS):
    """Submits the envelope and waits until it is committed on this node;
    returns the GetTransactionResponse (status COMMITTED, or DROPPED).
    Raises grpc.RpcError on refusal: see error_reason()."""
    answer = node_pb2_grpc.NodeServiceStub(channel).SubmitTransactionAndWait(
        node_pb2.SubmitTransactionAndWaitRequest(envelope=envelope), timeout=timeout_seconds
    )
    return answer.transaction


def error_reason(rpc_error):
    """The govchain reason ("NONCE_USED", ...) of a failed call, from the
    google.rpc.ErrorInfo in its status details; None when it carries none."""
    status = rpc_status.from_call(rpc_error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                return info.reason
    return None


def follow(open_channel, transaction_filter=None, after=None, from_height=0):
    """Yields CommittedTransactions matching `transaction_filter` (a
    node_pb2.TransactionFilter) in chain order, for as long as the caller
    iterates. On a broken stream (UNAVAILABLE, CANCELLED) it calls
    `open_channel()` for a new channel and resumes after the last position it
    yielded, so the caller sees no gap and no repeat. Gives up, re-raising,
    after RECONNECTS_MAX reconnects in a row that brought nothing new."""
    reconnects = 0
    while True:
        request = node_pb2.SubscribeTransactionsRequest(from_height=from_height)
        if transaction_filter is not None:
            request.filter.CopyFrom(transaction_filter)
        if after is not None:
            request.after.CopyFrom(after)
        stream = node_pb2_grpc.NodeServiceStub(open_channel()).SubscribeTransactions(request)
        try:
            for message in stream:
                reconnects = 0
                after = node_pb2.ChainPosition()
                after.CopyFrom(message.transaction.position)
                yield message.transaction
            error = None
        except grpc.RpcError as err:
            if err.code() not in RESUMABLE_CODES:
                raise
            error = err
        finally:
            stream.cancel()
        # The stream broke, or the node ended it: resume after the last one.
        if reconnects >= RECONNECTS_MAX:
            raise error or RuntimeError(f"the stream ended {reconnects} times in a row")
        reconnects += 1
        time.sleep(RECONNECT_PAUSE_SECONDS)
