// follow() against an in-memory NodeService (connect's router transport)
// whose streams break on cue: what it resumes after, when it gives up, and
// what it does not resume. devnet_flow.ts follows a real node.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";

import {
  NodeService,
  type SubscribeTransactionsRequest,
  type SubscribeTransactionsResponseSchema,
} from "../src/gen/govchain/node/v1/node_pb.js";
import { RECONNECTS_MAX, follow, type StreamSource } from "../src/node.js";

type Response = MessageInitShape<typeof SubscribeTransactionsResponseSchema>;

/**
 * A chain with one matching transaction at index 0 of each height from 1 to
 * `head`. Stream n sends at most `budgets[n]` messages (all when absent),
 * then fails with `failure`; a stream that sent everything ends.
 */
class FakeNode {
  readonly requests: SubscribeTransactionsRequest[] = [];
  private readonly head: bigint;
  private readonly budgets: number[];
  private readonly failure: ConnectError;

  constructor(head: number, budgets: number[], failure = new ConnectError("the node went away", Code.Unavailable)) {
    this.head = BigInt(head);
    this.budgets = [...budgets];
    this.failure = failure;
  }

  open(): StreamSource {
    const transport = createRouterTransport(({ service }) => {
      service(NodeService, { subscribeTransactions: (request) => this.stream(request) });
    });
    return { client: createClient(NodeService, transport), throwIfClosed: () => undefined };
  }

  private async *stream(request: SubscribeTransactionsRequest): AsyncGenerator<Response> {
    this.requests.push(request);
    const budget = this.budgets.shift() ?? Number.POSITIVE_INFINITY;
    const first = request.after === undefined ? request.fromHeight || 1n : request.after.height + 1n;
    let sent = 0;
    for (let height = first; height <= this.head; height++) {
      if (sent === budget) {
        throw this.failure;
      }
      yield { transaction: { position: { height, index: 0 }, kind: "anchor_record", transactionId: id(height) } };
      sent += 1;
    }
    if (sent === budget) {
      throw this.failure;
    }
  }
}

function id(height: bigint): Uint8Array {
  return new Uint8Array(32).fill(Number(height));
}

describe("follow", () => {
  it("resumes after the last transaction it yielded: no gap, no repeat", async () => {
    const node = new FakeNode(7, [2, 3]);
    const heights: bigint[] = [];
    const filter = { kinds: ["anchor_record"], datasets: ["health/"] };
    for await (const transaction of follow(() => node.open(), { filter, fromHeight: 1n, reconnectPauseMs: 1 })) {
      heights.push(transaction.position!.height);
      assert.deepEqual(transaction.transactionId, id(transaction.position!.height));
      if (heights.length === 7) {
        break;
      }
    }
    assert.deepEqual(heights, [1n, 2n, 3n, 4n, 5n, 6n, 7n]);
    assert.deepEqual(
      node.requests.map((request) => request.after?.height),
      [undefined, 2n, 5n],
    );
    for (const request of node.requests) {
      assert.deepEqual(request.filter?.kinds, ["anchor_record"]);
      assert.deepEqual(request.filter?.datasets, ["health/"]);
      assert.equal(request.fromHeight, 1n);
    }
  });

  it("starts after the caller's checkpoint", async () => {
    const node = new FakeNode(5, []);
    const after = { $typeName: "govchain.node.v1.ChainPosition" as const, height: 3n, index: 0 };
    const heights: bigint[] = [];
    for await (const transaction of follow(() => node.open(), { after, reconnectPauseMs: 1 })) {
      heights.push(transaction.position!.height);
      if (heights.length === 2) {
        break;
      }
    }
    assert.deepEqual(heights, [4n, 5n]);
    assert.equal(node.requests[0]?.after?.height, 3n);
  });

  it("gives up, rethrowing, after RECONNECTS_MAX reconnects that bring nothing", async () => {
    const node = new FakeNode(3, new Array(RECONNECTS_MAX + 5).fill(0));
    const consume = async () => {
      for await (const transaction of follow(() => node.open(), { reconnectPauseMs: 1 })) {
        assert.fail(`got ${transaction.position?.height}`);
      }
    };
    await assert.rejects(consume, (err: unknown) => err instanceof ConnectError && err.code === Code.Unavailable);
    assert.equal(node.requests.length, RECONNECTS_MAX + 1);
  });

  it("counts reconnects anew after each transaction", async () => {
    // Each stream brings one transaction and breaks: never RECONNECTS_MAX
    // empty reconnects in a row.
    const head = RECONNECTS_MAX * 2;
    const node = new FakeNode(head, new Array(head).fill(1));
    let count = 0;
    for await (const transaction of follow(() => node.open(), { reconnectPauseMs: 1 })) {
      count += 1;
      assert.equal(transaction.position?.height, BigInt(count));
      if (count === head) {
        break;
      }
    }
    assert.equal(node.requests.length, head);
  });

  it("rethrows at once what is not a broken stream", async () => {
    const node = new FakeNode(3, [1], new ConnectError("unknown kind", Code.InvalidArgument));
    const heights: bigint[] = [];
    const consume = async () => {
      for await (const transaction of follow(() => node.open(), { reconnectPauseMs: 1 })) {
        heights.push(transaction.position!.height);
      }
    };
    await assert.rejects(consume, (err: unknown) => err instanceof ConnectError && err.code === Code.InvalidArgument);
    assert.deepEqual(heights, [1n]);
    assert.equal(node.requests.length, 1);
  });
});
