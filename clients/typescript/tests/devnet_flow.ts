// The govchain-client TypeScript package against a running devnet, as a
// department system would use it (the same scenario as the Python client's
// devnet_flow.py):
//
//     node dist/tests/devnet_flow.js --devnet DIR
//
// Signs and submit-and-waits an anchor, reads it back with its proof and
// verifies it against DIR's genesis.json, tampers one byte and sees
// ProofError, follows anchors across a closed connection without gap or
// repeat, and reads the structured reason of a reused nonce. The first
// failed check exits with 1.

import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { clone, create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

import {
  type GetTransactionResponse,
  GetTransactionResponseSchema,
  TransactionStatus,
} from "../src/gen/govchain/node/v1/node_pb.js";
import { TransactionOutcome, type TransactionEnvelope, TransactionSchema } from "../src/gen/govchain/types/v1/types_pb.js";
import {
  NodeConnection,
  ProofError,
  bytesEqual,
  connect,
  errorReason,
  follow,
  hex,
  nextNonce,
  publicKey,
  signEnvelope,
  submitAndWait,
  transactionId,
  verifyTransactionProof,
  type SigningKey,
} from "../src/index.js";

const DEPARTMENT = "health";
const RPC_TIMEOUT_MS = 30_000;
const ANCHORS = 6;
// The follower's connection is closed after this many anchors.
const CLOSE_AFTER = 3;

class CheckFailed extends Error {}

function check(condition: boolean, message: string): asserts condition {
  if (!condition) {
    throw new CheckFailed(message);
  }
}

function step(text: string): void {
  console.log(`step: ${text}`);
}

function ok(text: string): void {
  console.log(`  ok: ${text}`);
}

/** health's node address, certificates and signing key, and genesis. */
class Devnet {
  readonly address: string;
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly signingKey: Buffer;
  readonly genesis: string;
  readonly chainId: string;

  constructor(directory: string) {
    const devnet = JSON.parse(readFileSync(join(directory, "devnet.json"), "utf8"));
    const node = (devnet.nodes as { name: string; url: string }[]).find((n) => n.name === DEPARTMENT);
    check(node !== undefined, `devnet.json lists no node named ${DEPARTMENT}`);
    const certs = join(directory, devnet.certs as string);
    this.address = node.url;
    this.ca = readFileSync(join(certs, "ca.crt"));
    this.cert = readFileSync(join(certs, DEPARTMENT, "client.crt"));
    this.key = readFileSync(join(certs, DEPARTMENT, "client.key"));
    this.signingKey = readFileSync(join(certs, DEPARTMENT, "signing.key"));
    this.genesis = readFileSync(join(certs, "genesis.json"), "utf8");
    this.chainId = JSON.parse(this.genesis).chain_id as string;
  }

  connect(): Promise<NodeConnection> {
    return connect({
      address: this.address,
      ca: this.ca,
      cert: this.cert,
      key: this.key,
      serverName: `${DEPARTMENT}.node.govchain`,
    });
  }
}

type TransactionInit = MessageInitShape<typeof TransactionSchema>;

function anchor(dataset: string, recordId: string): TransactionInit {
  return {
    body: {
      case: "anchorRecord",
      value: {
        dataset,
        recordId,
        recordHash: new Uint8Array(createHash("sha256").update(recordId).digest()),
        schema: "text/plain",
        recordTimeMs: BigInt(Date.now()),
      },
    },
  };
}

/** Signs with the next nonce, submits and waits; checks it succeeded. */
async function submit(
  devnet: Devnet,
  connection: NodeConnection,
  signingKey: SigningKey,
  transaction: TransactionInit,
): Promise<{ envelope: TransactionEnvelope; committed: GetTransactionResponse }> {
  const nonce = await nextNonce(connection, publicKey(signingKey));
  const envelope = signEnvelope(signingKey, devnet.chainId, nonce, create(TransactionSchema, transaction));
  const committed = await submitAndWait(connection, envelope);
  const id = transactionId(devnet.chainId, envelope.signer, nonce, envelope.payload);
  check(bytesEqual(committed.transactionId, id), "the node's transaction id differs from ours");
  check(committed.status === TransactionStatus.COMMITTED, `status ${TransactionStatus[committed.status]}`);
  check(
    committed.result?.outcome === TransactionOutcome.SUCCESS,
    `outcome ${committed.result?.outcome}: ${committed.result?.error}`,
  );
  return { envelope, committed };
}

async function prove(
  devnet: Devnet,
  connection: NodeConnection,
  committed: GetTransactionResponse,
): Promise<GetTransactionResponse> {
  step("read the anchor back with prove=true and verify it against genesis.json");
  const response = await connection.client.getTransaction(
    { transactionId: committed.transactionId, prove: true },
    { timeoutMs: RPC_TIMEOUT_MS },
  );
  const proven = verifyTransactionProof(response, devnet.genesis, committed.transactionId);
  check(proven.height === committed.blockHeight, `proven height ${proven.height}`);
  check(bytesEqual(proven.blockHash, committed.blockHash), "proven block hash differs");
  check(proven.quorum === 3 && proven.signers >= proven.quorum, `${proven.signers} signers, quorum ${proven.quorum}`);
  ok(`height ${proven.height}, index ${proven.index} of ${proven.treeSize}, ${proven.signers} signers`);
  return response;
}

function flip(data: Uint8Array, at = 0): Uint8Array {
  const copy = new Uint8Array(data);
  const index = at < 0 ? copy.length + at : at;
  copy[index] = copy[index]! ^ 1;
  return copy;
}

function tamper(devnet: Devnet, response: GetTransactionResponse): void {
  step("tamper one byte: ProofError names the item");
  const cases: [string, (r: GetTransactionResponse) => void][] = [
    ["envelope id", (r) => (r.envelope!.payload = flip(r.envelope!.payload))],
    ["envelope signature", (r) => (r.envelope!.signature = flip(r.envelope!.signature))],
    [
      "commit signature",
      (r) => {
        const signature = r.proof!.certificate!.signatures[0]!;
        signature.signature = flip(signature.signature);
      },
    ],
    ["certificate block hash", (r) => (r.proof!.header = flip(r.proof!.header, -1))],
  ];
  for (const [item, change] of cases) {
    const tampered = clone(GetTransactionResponseSchema, response);
    change(tampered);
    try {
      verifyTransactionProof(tampered, devnet.genesis);
    } catch (err) {
      check(err instanceof ProofError, `tampering the ${item} threw ${String(err)}`);
      check(err.item === item, `tampering the ${item} was refused as ${err.message}`);
      ok(err.message);
      continue;
    }
    throw new CheckFailed(`a tampered ${item} verified`);
  }
}

async function followAcrossReconnect(
  devnet: Devnet,
  fromHeight: bigint,
  dataset: string,
  expected: Uint8Array[],
): Promise<void> {
  step(`follow anchor_record across a closed connection (after ${CLOSE_AFTER})`);
  const connections: NodeConnection[] = [];
  const open = async () => {
    connections.push(await devnet.connect());
    return connections[connections.length - 1]!;
  };
  const seen: Uint8Array[] = [];
  const filter = { kinds: ["anchor_record"], datasets: [dataset] };
  for await (const transaction of follow(open, { filter, fromHeight })) {
    check(transaction.kind === "anchor_record", `kind "${transaction.kind}" passed the filter`);
    seen.push(transaction.transactionId);
    const position = transaction.position;
    console.log(`  got ${hex(transaction.transactionId).slice(0, 16)} at (${position?.height}, ${position?.index})`);
    if (seen.length === CLOSE_AFTER) {
      connections[connections.length - 1]!.close();
    }
    if (seen.length === expected.length) {
      break;
    }
  }
  for (const connection of connections) {
    connection.close();
  }
  check(connections.length === 2, `${connections.length} connections opened, expected one reconnect`);
  check(
    seen.length === expected.length && seen.every((id, i) => bytesEqual(id, expected[i]!)),
    "the followed ids differ from the submitted",
  );
  ok(`${seen.length} anchors in order over ${connections.length} connections, no gap, no repeat`);
}

async function reusedNonce(devnet: Devnet, connection: NodeConnection, usedNonce: bigint): Promise<void> {
  step("submit with a used nonce: reason NONCE_USED");
  const transaction = create(TransactionSchema, anchor("health/typescript-client", "replayed"));
  const envelope = signEnvelope(devnet.signingKey, devnet.chainId, usedNonce, transaction);
  try {
    await submitAndWait(connection, envelope);
  } catch (err) {
    check(err instanceof ConnectError, `not a ConnectError: ${String(err)}`);
    check(err.code === Code.FailedPrecondition, `code ${Code[err.code]}: ${err.rawMessage}`);
    const reason = errorReason(err);
    check(reason === "NONCE_USED", `reason ${reason}: ${err.rawMessage}`);
    ok(`FAILED_PRECONDITION, reason ${reason}`);
    return;
  }
  throw new CheckFailed(`nonce ${usedNonce} was accepted twice`);
}

async function run(directory: string): Promise<void> {
  const devnet = new Devnet(directory);
  const connection = await devnet.connect();
  const dataset = `${DEPARTMENT}/typescript-client-${randomBytes(4).toString("hex")}`;

  step("sign and submit-and-wait an anchor");
  const first = await submit(devnet, connection, devnet.signingKey, anchor(dataset, "r0"));
  ok(`${hex(first.committed.transactionId)} at height ${first.committed.blockHeight}`);
  const response = await prove(devnet, connection, first.committed);
  tamper(devnet, response);

  step(`${ANCHORS - 1} more anchors, and a citizen's create_identity between them`);
  const expected = [first.committed.transactionId];
  const citizen = generateKeyPairSync("ed25519").privateKey;
  for (let n = 1; n < ANCHORS; n++) {
    const { committed } = await submit(devnet, connection, devnet.signingKey, anchor(dataset, `r${n}`));
    expected.push(committed.transactionId);
    if (n === 2) {
      await submit(devnet, connection, citizen, { body: { case: "createIdentity", value: {} } });
    }
  }
  ok(`${expected.length} anchors committed`);
  await followAcrossReconnect(devnet, first.committed.blockHeight, dataset, expected);
  await reusedNonce(devnet, connection, first.envelope.nonce);
  connection.close();
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { devnet: { type: "string" } } });
  if (values.devnet === undefined) {
    console.error("usage: node dist/tests/devnet_flow.js --devnet DIR (a devnet directory, with devnet.json)");
    return 2;
  }
  const started = performance.now();
  try {
    await run(values.devnet);
  } catch (err) {
    if (err instanceof CheckFailed) {
      console.log(`FAILED: ${err.message}`);
      return 1;
    }
    if (err instanceof ConnectError) {
      console.log(`FAILED: unexpected ${Code[err.code]}: ${err.rawMessage}`);
      return 1;
    }
    console.log(`FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return 1;
  }
  console.log(`all steps passed in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return 0;
}

// Exits at once: a failure may leave a connection open, which would keep
// node running.
process.exit(await main());
