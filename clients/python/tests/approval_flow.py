"""The restaurant case end to end through the govchain-client package, as a
department's case-management system would drive it against a devnet that
`govchain devnet` seeded (its open-restaurant workflow and demo officers).

    python approval_flow.py --devnet DIR

A new citizen creates an identity and opens a case with the demo's floor plan; an early action on
the licence step is refused with a machine-readable reason; then, step by
step, an officer of each ready step's department approves until the case is
APPROVED; an action on the closed case is refused; and every
transaction of the case's history is read back with its proof and verified
against DIR's genesis.json. The first failed check exits with 1.
"""

import json
import os
import sys

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import govchain_client as gc
from flow_support import check, main, ok, read, step
from govchain.approval.v1 import approval_pb2, approval_pb2_grpc
from govchain.node.v1 import node_pb2, node_pb2_grpc
from govchain.types.v1 import types_pb2

WORKFLOW = "open-restaurant"
# The department whose certificate the case-management system connects
# with: it has a step in the demo workflow, so it sees the case.
DEPARTMENT = "health"
RPC_TIMEOUT_SECONDS = 30
# Rounds of "approve every ready step" before giving up: the demo has two
# levels of steps.
ROUNDS_MAX = 5


class Devnet:
    """The devnet's node addresses and certificates, the demo officers'
    keys, and genesis."""

    def __init__(self, directory):
        with open(os.path.join(directory, "devnet.json")) as f:
            devnet = json.load(f)
        self.certs = os.path.join(directory, devnet["certs"])
        self.nodes = {n["name"]: n["url"] for n in devnet["nodes"]}
        self.genesis = read(self.certs, "genesis.json").decode()
        self.chain_id = json.loads(self.genesis)["chain_id"]
        self.officers_dir = os.path.join(directory, "demo", "officers")

    def connect(self, department):
        return gc.connect(
            self.nodes[department],
            read(self.certs, "ca.crt"),
            read(self.certs, department, "client.crt"),
            read(self.certs, department, "client.key"),
            server_name=f"{department}.node.govchain",
        )

    def officer_key(self, department):
        path = os.path.join(self.officers_dir, f"{department}.key")
        check(os.path.exists(path), f"no demo officer key for {department} at {path}")
        return read(path)


def submit(devnet, channel, key_pem, transaction):
    """Signs with the next nonce, submits and waits for the commit; returns
    the committed transaction, whatever its outcome."""
    nonce = gc.next_nonce(channel, gc.public_key(key_pem))
    envelope = gc.sign_envelope(key_pem, devnet.chain_id, nonce, transaction)
    committed = gc.submit_and_wait(channel, envelope)
    check(
        committed.status == node_pb2.TRANSACTION_STATUS_COMMITTED,
        f"status {node_pb2.TransactionStatus.Name(committed.status)}",
    )
    return committed


def succeeded(committed, what):
    check(
        committed.result.outcome == types_pb2.TRANSACTION_OUTCOME_SUCCESS,
        f"{what}: outcome {committed.result.outcome}: {committed.result.error}",
    )


def refused(devnet, channel, key_pem, transaction, what):
    """Submits a transaction the rules refuse: the node refuses it at
    admission (an error status whose ErrorInfo carries the reason), or, if
    it got into a block, it commits as FAILED with the reason in its result.
    Returns the reason."""
    try:
        committed = submit(devnet, channel, key_pem, transaction)
    except grpc.RpcError as err:
        reason = gc.error_reason(err)
        check(reason, f"{what}: {err.code().name} without a reason: {err.details()}")
        ok(f"{what}: refused at admission, {err.code().name} ({reason}): {err.details()}")
        return reason
    check(
        committed.result.outcome == types_pb2.TRANSACTION_OUTCOME_FAILED,
        f"{what} took effect",
    )
    reason = types_pb2.ErrorReason.Name(committed.result.reason)
    check(reason != "ERROR_REASON_UNSPECIFIED", f"{what}: refused without a reason")
    ok(f"{what}: committed as FAILED, {reason}: {committed.result.error}")
    return reason


def act(step_id, case_id, action, reason=""):
    return types_pb2.Transaction(
        act_on_case=types_pb2.ActOnCase(
            case_id=case_id, step_id=step_id, action=action, reason=reason
        )
    )


def get_case(approvals, case_id):
    response = approvals.GetCase(
        approval_pb2.GetCaseRequest(case_id=case_id), timeout=RPC_TIMEOUT_SECONDS
    )
    return response.case, response.workflow


def open_case(devnet, channel, approvals):
    step(f"a new citizen opens an {WORKFLOW} case with the demo's floor plan")
    workflow = approvals.GetWorkflow(
        approval_pb2.GetWorkflowRequest(workflow_id=WORKFLOW), timeout=RPC_TIMEOUT_SECONDS
    ).workflow
    listed = approvals.ListCases(
        approval_pb2.ListCasesRequest(workflow_id=WORKFLOW), timeout=RPC_TIMEOUT_SECONDS
    )
    documents = [d for case in listed.cases for d in case.documents]
    check(documents, f"the demo's {WORKFLOW} case (and its floor plan) is missing")
    citizen = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    succeeded(
        submit(devnet, channel, citizen, types_pb2.Transaction(create_identity={})),
        "create_identity",
    )
    opened = submit(
        devnet,
        channel,
        citizen,
        types_pb2.Transaction(
            open_case=types_pb2.OpenCase(
                workflow_id=WORKFLOW,
                workflow_version=workflow.version,
                documents=[documents[0]],
            )
        ),
    )
    succeeded(opened, "open_case")
    case_id = opened.transaction_id
    ok(f"case {case_id.hex()[:16]} against {WORKFLOW} v{workflow.version}")
    return case_id, workflow


def walk_to_approval(devnet, channel, approvals, case_id, workflow):
    blocked = [s for s in workflow.steps if s.depends_on]
    check(blocked, "the demo workflow has no step with dependencies")
    early = blocked[0]
    step(f"{early.department}'s officer acts on {early.step_id} before its dependencies")
    refused(
        devnet,
        channel,
        devnet.officer_key(early.department),
        act(early.step_id, case_id, types_pb2.CASE_ACTION_APPROVE),
        f"approving {early.step_id} early",
    )

    step("approve each ready step with an officer of its department")
    # The demo's eligibility step is automatic: its rule (the applicant's
    # name attested by civil) is false for this new citizen, so civil's
    # clerk overrides it with a reason.
    automatic = {s.step_id for s in workflow.steps if s.kind == types_pb2.STEP_KIND_AUTOMATIC}
    approvers = {}
    for _ in range(ROUNDS_MAX):
        case, _ = get_case(approvals, case_id)
        if case.state == types_pb2.CASE_STATE_APPROVED:
            break
        check(case.state == types_pb2.CASE_STATE_OPEN, f"case state {case.state}")
        ready = [s for s in case.steps if s.state == types_pb2.STEP_STATE_READY]
        check(ready, "an open case with no ready step")
        for ready_step in ready:
            key = devnet.officer_key(ready_step.department)
            if ready_step.step_id in automatic:
                check(ready_step.rule_outcome == "false", f"rule outcome {ready_step.rule_outcome!r}")
                action = act(
                    ready_step.step_id,
                    case_id,
                    types_pb2.CASE_ACTION_OVERRIDE_APPROVE,
                    "name checked at the counter",
                )
            else:
                action = act(ready_step.step_id, case_id, types_pb2.CASE_ACTION_APPROVE)
            committed = submit(devnet, channel, key, action)
            succeeded(committed, f"approving {ready_step.step_id}")
            approvers[ready_step.step_id] = (ready_step.department, key)
            ok(f"{ready_step.step_id} approved by {ready_step.department}'s officer")
    case, _ = get_case(approvals, case_id)
    check(
        case.state == types_pb2.CASE_STATE_APPROVED,
        f"case state {types_pb2.CaseState.Name(case.state)} after {ROUNDS_MAX} rounds",
    )
    ok(f"APPROVED after {len(case.events)} events")

    step("an officer acts on the closed case")
    step_id, (department, key) = sorted(approvers.items())[0]
    refused(
        devnet,
        channel,
        key,
        act(step_id, case_id, types_pb2.CASE_ACTION_APPROVE),
        f"approving {step_id} again ({department}'s officer) once the case is closed",
    )
    return case


def prove_history(devnet, channel, case):
    step("read every transaction of the case back with its proof, against genesis.json")
    nodes = node_pb2_grpc.NodeServiceStub(channel)
    for event in case.events:
        response = nodes.GetTransaction(
            node_pb2.GetTransactionRequest(transaction_id=event.transaction_id, prove=True),
            timeout=RPC_TIMEOUT_SECONDS,
        )
        proven = gc.verify_transaction_proof(response, devnet.genesis, event.transaction_id)
        check(proven.height == event.height, f"{event.kind}: proven at {proven.height}")
    ok(f"{len(case.events)} events proven")


def run(directory):
    devnet = Devnet(directory)
    channel = devnet.connect(DEPARTMENT)
    approvals = approval_pb2_grpc.ApprovalServiceStub(channel)
    case_id, workflow = open_case(devnet, channel, approvals)
    case = walk_to_approval(devnet, channel, approvals, case_id, workflow)
    prove_history(devnet, channel, case)
    channel.close()


if __name__ == "__main__":
    sys.exit(main(run, __doc__))
