// Calls to a node over mutual TLS (gRPC over HTTP/2, connect-node's gRPC
// transport): the connection, submit-and-wait, structured error reasons and
// a transaction stream that resumes where it broke (Python twin:
// govchain_client.node).

import { setTimeout as sleep } from "node:timers/promises";
import { createSecureContext } from "node:tls";

import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { type ErrorInfo, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import {
  type ChainPosition,
  type CommittedTransaction,
  type GetTransactionResponse,
  NodeService,
  type TransactionFilterSchema,
} from "./gen/govchain/node/v1/node_pb.js";
import type { TransactionEnvelope } from "./gen/govchain/types/v1/types_pb.js";

/** Bound on a unary call, in milliseconds. */
export const RPC_TIMEOUT_MS = 30_000;
/** Bound on SubmitTransactionAndWait: the node's own wait is 60 s without a
 * deadline. */
export const COMMIT_TIMEOUT_MS = 60_000;
/** Largest message either side may send, as the Python client allows. */
export const MESSAGE_BYTES_MAX = 64 * 1024 * 1024;
/** follow(): consecutive reconnects without a new transaction before giving
 * up, and the pause before each. */
export const RECONNECTS_MAX = 8;
export const RECONNECT_PAUSE_MS = 500;
/** A broken stream, worth resuming: the node went away or the connection
 * was closed. */
export const RESUMABLE_CODES: ReadonlySet<Code> = new Set([Code.Unavailable, Code.Canceled]);
/** The `ErrorInfo.domain` of every govchain error. */
export const ERROR_DOMAIN = "govchain";

/** PEM text or bytes. */
export type Pem = string | Uint8Array;

export interface ConnectOptions {
  /** "https://host:port" or "host:port". */
  address: string;
  /** The consortium CA, and a department's client certificate and key. */
  ca: Pem;
  cert: Pem;
  key: Pem;
  /** The name in the node's certificate, "<department>.node.govchain", when
   * it differs from the dialled host (always, for an IP address). */
  serverName?: string;
  /** How long to wait for the TLS handshake; RPC_TIMEOUT_MS by default. */
  readyTimeoutMs?: number;
}

/**
 * One HTTP/2 connection to a node. `client` calls NodeService; `transport`
 * serves the other services' clients (`createClient(IdentityService,
 * connection.transport)`).
 */
export class NodeConnection {
  readonly transport: Transport;
  readonly client: Client<typeof NodeService>;
  private readonly session: Http2SessionManager;
  // Aborted by close(): every call made through `transport` listens to it.
  private readonly closing = new AbortController();

  constructor(session: Http2SessionManager, baseUrl: string) {
    this.session = session;
    const closing = this.closing.signal;
    const cancelOnClose: Interceptor = (next) => (request) =>
      next({ ...request, signal: AbortSignal.any([request.signal, closing]) });
    this.transport = createGrpcTransport({
      baseUrl,
      sessionManager: session,
      interceptors: [cancelOnClose],
      readMaxBytes: MESSAGE_BYTES_MAX,
      writeMaxBytes: MESSAGE_BYTES_MAX,
    });
    this.client = createClient(NodeService, this.transport);
  }

  /** Whether close() was called. */
  get closed(): boolean {
    return this.closing.signal.aborted;
  }

  /** Ends the connection: every call still on it fails with CANCELED, and
   * a stream yields nothing more, not even messages it had already
   * received. */
  close(): void {
    this.closing.abort(new ConnectError("the connection was closed", Code.Canceled));
    this.session.abort();
  }

  /** Throws the CANCELED error of close() once it was called. */
  throwIfClosed(): void {
    this.closing.signal.throwIfAborted();
  }
}

/**
 * Connects over mutual TLS and waits for the handshake; throws a
 * ConnectError (UNAVAILABLE, or DEADLINE_EXCEEDED after readyTimeoutMs),
 * or a TypeError when the CA, certificate or key does not load.
 */
export async function connect(options: ConnectOptions): Promise<NodeConnection> {
  const baseUrl = options.address.includes("://") ? options.address : `https://${options.address}`;
  const tls = {
    ca: Buffer.from(options.ca),
    cert: Buffer.from(options.cert),
    key: Buffer.from(options.key),
    ...(options.serverName === undefined ? {} : { servername: options.serverName }),
  };
  try {
    // Loaded once here so that a bad file is named now, not lost inside
    // the session manager's connection attempt.
    createSecureContext(tls);
  } catch (err) {
    throw new TypeError(`the CA, client certificate or key does not load: ${String(err)}`, { cause: err });
  }
  const session = new Http2SessionManager(baseUrl, undefined, tls);
  const timeoutMs = options.readyTimeoutMs ?? RPC_TIMEOUT_MS;
  const deadline = new AbortController();
  const state = await Promise.race([
    session.connect(),
    sleep(timeoutMs, "timeout" as const, { signal: deadline.signal }).catch(() => "timeout" as const),
  ]);
  deadline.abort();
  if (state === "timeout") {
    session.abort();
    throw new ConnectError(`no connection to ${baseUrl} within ${timeoutMs} ms`, Code.DeadlineExceeded);
  }
  if (state === "error") {
    const cause = session.error();
    const why = cause instanceof ConnectError ? cause.rawMessage : String(cause);
    throw new ConnectError(`cannot connect to ${baseUrl}: ${why}`, Code.Unavailable, undefined, undefined, cause);
  }
  return new NodeConnection(session, baseUrl);
}

/** The nonce the signer (raw 32-byte public key) should use next. */
export async function nextNonce(connection: NodeConnection, signer: Uint8Array): Promise<bigint> {
  const account = await connection.client.getAccount({ publicKey: signer }, { timeoutMs: RPC_TIMEOUT_MS });
  return account.nextNonce;
}

/**
 * Submits the envelope and waits until it is committed on this node;
 * returns the GetTransactionResponse (status COMMITTED, or DROPPED). Throws
 * a ConnectError on refusal: see errorReason().
 */
export async function submitAndWait(
  connection: NodeConnection,
  envelope: TransactionEnvelope,
  timeoutMs: number = COMMIT_TIMEOUT_MS,
): Promise<GetTransactionResponse> {
  const answer = await connection.client.submitTransactionAndWait({ envelope }, { timeoutMs });
  if (answer.transaction === undefined) {
    throw new ConnectError("SubmitTransactionAndWait answered without a transaction", Code.Internal);
  }
  return answer.transaction;
}

/** The google.rpc.ErrorInfo (domain "govchain") of a failed call, from its
 * status details; undefined when it carries none. */
export function errorInfo(error: unknown): ErrorInfo | undefined {
  if (!(error instanceof ConnectError)) {
    return undefined;
  }
  return error.findDetails(ErrorInfoSchema).find((info) => info.domain === ERROR_DOMAIN);
}

/** The govchain reason ("NONCE_USED", ...) of a failed call; undefined when
 * it carries none. */
export function errorReason(error: unknown): string | undefined {
  return errorInfo(error)?.reason;
}

export interface FollowOptions {
  /** Which committed transactions to receive; all when absent. */
  filter?: MessageInitShape<typeof TransactionFilterSchema>;
  /** Resume after this position (the last one processed). */
  after?: ChainPosition;
  /** Without `after`: the first height to stream from (0: the head on). */
  fromHeight?: bigint;
  /** The pause before each reconnect; RECONNECT_PAUSE_MS by default. */
  reconnectPauseMs?: number;
}

/** What follow() streams from: a NodeConnection, or in tests a client over
 * another transport. */
export type StreamSource = Pick<NodeConnection, "client" | "throwIfClosed">;

/**
 * Yields the committed transactions matching `filter`, in chain order, for
 * as long as the caller iterates. On a broken stream (UNAVAILABLE,
 * CANCELED), or one the node ended, it calls `open()` for a new connection
 * and resumes after the last position it yielded, so the caller sees no gap
 * and no repeat. Gives up, rethrowing, after RECONNECTS_MAX reconnects in a
 * row that brought nothing new. Leaving the loop cancels the stream.
 */
export async function* follow(
  open: () => StreamSource | Promise<StreamSource>,
  options: FollowOptions = {},
): AsyncGenerator<CommittedTransaction, void, undefined> {
  let after = options.after;
  let reconnects = 0;
  for (;;) {
    const connection = await open();
    const stream = new AbortController();
    let failure: unknown = undefined;
    try {
      const request = { filter: options.filter, after, fromHeight: options.fromHeight ?? 0n };
      for await (const message of connection.client.subscribeTransactions(request, { signal: stream.signal })) {
        // What a closed connection had received is not delivered: the
        // caller closed it to stop this stream (and resumes it here).
        connection.throwIfClosed();
        const transaction = message.transaction;
        if (transaction === undefined) {
          continue;
        }
        reconnects = 0;
        after = transaction.position ?? after;
        yield transaction;
      }
    } catch (err) {
      if (!(err instanceof ConnectError) || !RESUMABLE_CODES.has(err.code)) {
        throw err;
      }
      failure = err;
    } finally {
      stream.abort();
    }
    // The stream broke, or the node ended it: resume after the last one.
    if (reconnects >= RECONNECTS_MAX) {
      throw failure ?? new Error(`the stream ended ${reconnects} times in a row`);
    }
    reconnects += 1;
    await sleep(options.reconnectPauseMs ?? RECONNECT_PAUSE_MS);
  }
}
