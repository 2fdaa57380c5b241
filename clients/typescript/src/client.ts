// OrderPolicyClient: one gRPC channel to order-policy with the defaults a caller would otherwise
// get wrong. Every call has a deadline (timeoutMs, 5 s unless told). The channel uses the
// service config in service_config.json (the same file as the Python client's): round_robin over
// every address the target resolves to (a headless Kubernetes Service gives one per pod) and,
// decisions being free of side effects, up to 5 attempts on UNAVAILABLE while waiting for a ready
// server within the deadline, so a replica restarting or going away is not seen by the caller.
import * as fs from "node:fs";
import * as path from "node:path";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

import {
  Decision, DecideInput, decisionFrom, errorFromItem, errorFromRpc, HEALTH_RESPONSE, requestMessage,
} from "./convert";
import { OrderPolicyError } from "./errors";
import type { ProtoGrpcType } from "./generated/order_policy";
import type { DecideRequest } from "./generated/orderpolicy/v1/DecideRequest";
import type { DecideResult__Output } from "./generated/orderpolicy/v1/DecideResult";
import type { DecideStreamResponse__Output } from "./generated/orderpolicy/v1/DecideStreamResponse";
import type { OrderPolicyServiceClient } from "./generated/orderpolicy/v1/OrderPolicyService";

const PACKAGE_ROOT = path.resolve(__dirname, "..", "..");
export const DEFAULT_TIMEOUT_MS = 5_000;
/** The service config (round_robin, retries on UNAVAILABLE, wait for a ready server). */
export const SERVICE_CONFIG: Record<string, unknown> = JSON.parse(
  fs.readFileSync(path.join(PACKAGE_ROOT, "service_config.json"), "utf8"),
);
// Keepalive as often as a gRPC server accepts by default (one ping per 5 minutes without data).
const KEEPALIVE_TIME_MS = 300_000;
const KEEPALIVE_TIMEOUT_MS = 20_000;
const SCHEMES = ["dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:"];

const definition = protoLoader.loadSync("orderpolicy/v1/order_policy.proto", {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  includeDirs: [path.join(PACKAGE_ROOT, "protos")],
});
const loaded = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;

export type Result = Decision | OrderPolicyError;

export interface ClientOptions {
  /** The deadline of every call unless a call says otherwise (default 5000). */
  timeoutMs?: number;
  /** Channel credentials (TLS, mTLS); insecure when unset. `true`: TLS with the system's roots. */
  tls?: boolean | grpc.ChannelCredentials;
  /** Retries on UNAVAILABLE (default true). */
  retry?: boolean;
  /** Another service config than the shipped one. */
  serviceConfig?: Record<string, unknown>;
  /** Sent with every call. */
  metadata?: Record<string, string>;
  /** More channel options. */
  channelOptions?: grpc.ChannelOptions;
}

export interface CallOptions {
  timeoutMs?: number;
}

/** `host:port` as `dns:///host:port` (every address of the name is used); targets with a scheme as is. */
export function normalizeTarget(target: string): string {
  const t = target.trim();
  if (!t) throw new Error("empty target: give `host:port`, `dns:///host:port` or `ipv4:a:p,b:p`");
  return SCHEMES.some((s) => t.startsWith(s)) ? t : `dns:///${t}`;
}

/** The channel options of an OrderPolicyClient. */
export function channelOptions(retry = true, serviceConfig: Record<string, unknown> = SERVICE_CONFIG): grpc.ChannelOptions {
  const config = JSON.parse(JSON.stringify(serviceConfig));
  if (!retry) for (const method of config.methodConfig ?? []) delete method.retryPolicy;
  return {
    "grpc.service_config": JSON.stringify(config),
    "grpc.service_config_disable_resolution": 1,
    "grpc.enable_retries": retry ? 1 : 0,
    "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 5_000,
  };
}

type Slot = OrderPolicyError | null; // null: a request sent; else the error found before sending

function prepare(input: DecideInput, slots: Slot[]): DecideRequest | null {
  try {
    const message = requestMessage(input);
    slots.push(null);
    return message;
  } catch (err) {
    if (!(err instanceof OrderPolicyError)) throw err;
    slots.push(err);
    return null;
  }
}

function result(reply: DecideResult__Output | DecideStreamResponse__Output): Result {
  if (reply.result === "error" && reply.error) return errorFromItem(reply.error);
  return decisionFrom(reply.decision!, reply.request_id);
}

/** A client of orderpolicy.v1.OrderPolicyService; close it when done. */
export class OrderPolicyClient {
  readonly target: string;
  readonly timeoutMs: number;
  private readonly stub: OrderPolicyServiceClient;
  private readonly metadata: grpc.Metadata;

  constructor(target: string, options: ClientOptions = {}) {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(timeoutMs > 0)) throw new Error(`timeoutMs must be positive, got \`${timeoutMs}\``);
    this.target = normalizeTarget(target);
    this.timeoutMs = timeoutMs;
    const creds = options.tls === true ? grpc.credentials.createSsl()
      : options.tls ? options.tls : grpc.credentials.createInsecure();
    this.stub = new loaded.orderpolicy.v1.OrderPolicyService(this.target, creds, {
      ...channelOptions(options.retry ?? true, options.serviceConfig ?? SERVICE_CONFIG), ...options.channelOptions,
    });
    // grpc-js parses waitForReady in a service config but applies it only from call metadata.
    const methods = ((options.serviceConfig ?? SERVICE_CONFIG).methodConfig ?? []) as { waitForReady?: boolean }[];
    this.metadata = new grpc.Metadata({ waitForReady: methods.some((m) => m.waitForReady === true) });
    for (const [k, v] of Object.entries(options.metadata ?? {})) this.metadata.set(k, v);
  }

  close(): void {
    this.stub.close();
  }

  private deadline(opts?: CallOptions): grpc.CallOptions {
    return { deadline: new Date(Date.now() + (opts?.timeoutMs ?? this.timeoutMs)) };
  }

  /** Decide one request; rejects with InvalidArgument (with fieldViolations), Unavailable,
   * DeadlineExceeded or another OrderPolicyError. */
  decide(input: DecideInput, opts?: CallOptions): Promise<Decision> {
    let request: DecideRequest;
    try {
      request = requestMessage(input);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      this.stub.Decide(request, this.metadata, this.deadline(opts), (err, reply) => {
        if (err || !reply) reject(errorFromRpc(err));
        else resolve(decisionFrom(reply.decision!, reply.request_id));
      });
    });
  }

  /** Decide many requests in one call: one result per request, in order; an invalid item (found by
   * the client or the service) is its OrderPolicyError, returned in its place. */
  decideBatch(inputs: DecideInput[], opts?: CallOptions): Promise<Result[]> {
    const slots: Slot[] = [];
    let requests: DecideRequest[];
    try {
      requests = inputs.map((i) => prepare(i, slots)).filter((m): m is DecideRequest => m !== null);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      this.stub.DecideBatch({ requests }, this.metadata, this.deadline(opts), (err, reply) => {
        if (err || !reply) return reject(errorFromRpc(err));
        let next = 0;
        resolve(slots.map((slot) => slot ?? result(reply.results[next++])));
      });
    });
  }

  /** Decide requests over one DecideStream as they come: one result per request, in order, invalid
   * ones as their OrderPolicyError. The deadline covers the whole stream. */
  async *decideStream(inputs: Iterable<DecideInput> | AsyncIterable<DecideInput>, opts?: CallOptions,
  ): AsyncGenerator<Result> {
    const call = this.stub.DecideStream(this.metadata, this.deadline(opts));
    const slots: Slot[] = [];
    const pump = (async () => {
      try {
        for await (const input of inputs) {
          const message = prepare(input, slots);
          if (message !== null) call.write({ request: message });
        }
      } finally {
        call.end();
      }
    })();
    pump.catch(() => call.cancel());
    try {
      for await (const reply of call) {
        while (slots.length > 0 && slots[0] !== null) yield slots.shift()!;
        slots.shift();
        yield result(reply as DecideStreamResponse__Output);
      }
    } catch (err) {
      throw errorFromRpc(err);
    } finally {
      call.cancel();
    }
    await pump;
    for (const slot of slots) if (slot !== null) yield slot;
  }

  /** The server's grpc.health.v1 status: SERVING once it has a bundle, else NOT_SERVING. */
  health(opts?: CallOptions): Promise<string> {
    const names = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];
    return new Promise((resolve, reject) => {
      // HealthCheckRequest{service: ""} is the empty message.
      this.stub.makeUnaryRequest<Buffer, { status: number }>(
        "/grpc.health.v1.Health/Check", (b) => b, (b) => HEALTH_RESPONSE.decode(b) as unknown as { status: number },
        Buffer.alloc(0), this.metadata, this.deadline(opts),
        (err, reply) => (err || !reply ? reject(errorFromRpc(err)) : resolve(names[reply.status] ?? "UNKNOWN")),
      );
    });
  }
}
