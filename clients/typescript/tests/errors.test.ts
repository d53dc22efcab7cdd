// errorReason and errorInfo on errors decoded from gRPC trailers: a status
// with details is written into grpc-status-details-bin and read back by
// connect's gRPC protocol code, as the transport reads a node's answer
// (devnet_flow.ts reads a real node's).

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";

import { BadRequestSchema, ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { connect, errorInfo, errorReason } from "../src/node.js";

/** The error a client sees for a status with these details on the wire. */
function overTheWire(sent: ConnectError): ConnectError {
  const trailer = setTrailerStatus(new Headers(), sent);
  assert.ok(trailer.has("grpc-status-details-bin"));
  const received = findTrailerError(trailer);
  assert.ok(received !== undefined);
  return received;
}

describe("errorReason", () => {
  it("reads the govchain ErrorInfo among other details", () => {
    const error = overTheWire(
      new ConnectError("nonce 1 is used", Code.FailedPrecondition, undefined, [
        { desc: BadRequestSchema, value: { fieldViolations: [{ field: "envelope.nonce", description: "used" }] } },
        { desc: ErrorInfoSchema, value: { reason: "NONCE_USED", domain: "govchain", metadata: { next_nonce: "3" } } },
      ]),
    );
    assert.equal(error.code, Code.FailedPrecondition);
    assert.equal(errorReason(error), "NONCE_USED");
    assert.deepEqual(errorInfo(error)?.metadata, { next_nonce: "3" });
    assert.equal(error.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field, "envelope.nonce");
  });

  it("ignores another domain's ErrorInfo", () => {
    const error = overTheWire(
      new ConnectError("quota", Code.ResourceExhausted, undefined, [
        { desc: ErrorInfoSchema, value: { reason: "RATE_LIMITED", domain: "example.com" } },
      ]),
    );
    assert.equal(errorInfo(error)?.reason, undefined);
    assert.equal(error.findDetails(ErrorInfoSchema)[0]?.reason, "RATE_LIMITED");
  });

  it("answers undefined without details, or for what is not a call's error", () => {
    const plain = findTrailerError(new Headers({ "grpc-status": String(Code.Internal), "grpc-message": "x" }));
    assert.ok(plain !== undefined);
    assert.equal(errorReason(plain), undefined);
    assert.equal(errorReason(new Error("not a call")), undefined);
    assert.equal(errorReason(undefined), undefined);
  });
});

describe("connect", () => {
  it("names TLS files that do not load, before dialling", async () => {
    await assert.rejects(
      connect({ address: "127.0.0.1:1", ca: "not a PEM", cert: "not a PEM", key: "not a PEM" }),
      (err: unknown) => err instanceof TypeError && /does not load: .*PEM/.test(err.message),
    );
  });
});
