// Plain values in, messages out, and back: requests, decisions and rich error statuses.
import * as grpc from "@grpc/grpc-js";
import * as protobuf from "protobufjs";

import { errorClass, FieldViolation, InvalidArgument, OrderPolicyError } from "./errors";
import type { DecideRequest } from "./generated/orderpolicy/v1/DecideRequest";
import type { Decision__Output } from "./generated/orderpolicy/v1/Decision";
import type { Error__Output } from "./generated/orderpolicy/v1/Error";
import type { Value__Output } from "./generated/google/protobuf/Value";

export type Action = "cancel_order" | "cancel_appointment";
export type Outcome = "ALLOW" | "DENY";
export type JsonInput = Record<string, unknown> | string;

/** One request: `order`/`appointment` as Junction's JSON (an object or JSON text, sent as is; the
 * service validates it); `now` a Date or ISO 8601 text with an offset (unset: the server clock). */
export interface DecideInput {
  order: JsonInput;
  appointment?: JsonInput | null;
  action?: Action;
  now?: Date | string | null;
  bundleRevision?: string;
  explain?: boolean;
  requestId?: string;
}

export interface Reason { code: string; message: string; ruleId: string }
export interface FollowUp { code: string; message: string; httpMethod: string; path: string; ruleId: string }
export interface BundleRef { name: string; revision: string; digest: string }
export interface Explanation { facts: Record<string, unknown>; matchedRules: string[] }

/** The answer of the policy to one request. */
export interface Decision {
  outcome: Outcome;
  allowed: boolean;
  reasons: Reason[];
  followUps: FollowUp[];
  bundle: BundleRef;
  decisionId: string;
  evaluatedAt: Date | null;
  action: Action;
  orderId: string;
  requestId: string;
  explanation: Explanation | null;
}

const ACTIONS: Record<string, DecideRequest["action"]> = {
  cancel_order: "ACTION_CANCEL_ORDER",
  cancel_appointment: "ACTION_CANCEL_APPOINTMENT",
};
const ACTION_NAMES: Record<string, Action> = {
  ACTION_CANCEL_ORDER: "cancel_order",
  ACTION_CANCEL_APPOINTMENT: "cancel_appointment",
};

function invalid(field: string, description: string): InvalidArgument {
  return new InvalidArgument(`invalid request: ${description}`, {
    code: "INVALID_ARGUMENT", reason: "request_invalid", fieldViolations: [{ field, description }],
  });
}

function jsonText(value: unknown, field: string): string {
  if (typeof value === "string") return value;
  try {
    const text = JSON.stringify(value);
    if (text === undefined) throw new Error(`${typeof value} has no JSON form`);
    return text;
  } catch (err) {
    throw invalid(field, `\`${field}\` is not JSON data: ${(err as Error).message}`);
  }
}

const OFFSET = /(Z|[+-]\d{2}:?\d{2})$/i;

function timestamp(value: Date | string, field: string): { seconds: number; nanos: number } {
  let millis: number;
  if (typeof value === "string") {
    millis = Date.parse(value);
    if (Number.isNaN(millis)) throw invalid(field, `\`${value}\` is not an ISO 8601 timestamp, e.g. \`2026-03-10T12:00:00Z\``);
    if (!OFFSET.test(value.trim())) throw invalid(field, `\`${value}\` has no UTC offset, e.g. \`2026-03-10T12:00:00Z\``);
  } else if (value instanceof Date && !Number.isNaN(value.getTime())) {
    millis = value.getTime();
  } else {
    throw invalid(field, `\`${field}\` must be a valid Date or ISO 8601 text`);
  }
  const seconds = Math.floor(millis / 1000);
  return { seconds, nanos: (millis - seconds * 1000) * 1_000_000 };
}

// Edit distance, for "did you mean" hints.
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length];
}

/** The DecideRequest message of `input`; throws InvalidArgument naming the field when it cannot be said. */
export function requestMessage(input: DecideInput): DecideRequest {
  if (input === null || typeof input !== "object") throw invalid("order", "a request is an object with an `order`");
  const action = input.action ?? "cancel_order";
  if (!(action in ACTIONS)) {
    const hint = Object.keys(ACTIONS).find((a) => distance(a, String(action)) <= 3);
    const tip = hint ? `, did you mean \`${hint}\`` : ", expected `cancel_order` or `cancel_appointment`";
    throw invalid("action", `unknown action \`${action}\`${tip}`);
  }
  const out: DecideRequest = {
    request_id: input.requestId ?? "",
    action: ACTIONS[action],
    explain: input.explain ?? false,
    bundle_revision: input.bundleRevision ?? "",
    order_json: jsonText(input.order, "order"),
  };
  if (input.appointment !== undefined && input.appointment !== null) {
    out.appointment_json = jsonText(input.appointment, "appointment");
  }
  if (input.now !== undefined && input.now !== null) out.now = timestamp(input.now, "now");
  return out;
}

function plain(value: Value__Output | null | undefined): unknown {
  if (!value) return null;
  switch (value.kind) {
    case "numberValue": return value.numberValue;
    case "stringValue": return value.stringValue;
    case "boolValue": return value.boolValue;
    case "structValue": return structToObject(value.structValue?.fields ?? {});
    case "listValue": return (value.listValue?.values ?? []).map(plain);
    default: return null;
  }
}

function structToObject(fields: Record<string, Value__Output>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, plain(v)]));
}

/** The typed Decision of a Decision message. */
export function decisionFrom(message: Decision__Output, requestId: string): Decision {
  const outcome: Outcome = message.outcome === "OUTCOME_ALLOW" ? "ALLOW" : "DENY";
  const at = message.evaluated_at;
  return {
    outcome,
    allowed: outcome === "ALLOW",
    reasons: message.reasons.map((r) => ({ code: r.code, message: r.message, ruleId: r.rule_id })),
    followUps: message.follow_ups.map((f) => ({
      code: f.code, message: f.message, httpMethod: f.http_method, path: f.path, ruleId: f.rule_id,
    })),
    bundle: { name: message.bundle?.name ?? "", revision: message.bundle?.revision ?? "", digest: message.bundle?.digest ?? "" },
    decisionId: message.decision_id,
    evaluatedAt: at ? new Date(Number(at.seconds) * 1000 + Math.floor(at.nanos / 1_000_000)) : null,
    action: ACTION_NAMES[message.action] ?? "cancel_order",
    orderId: message.order_id,
    requestId,
    explanation: message.explanation
      ? { facts: structToObject(message.explanation.facts?.fields ?? {}), matchedRules: [...message.explanation.matched_rules] }
      : null,
  };
}

// A violation named after the caller's argument: the client sends `order` as `order_json`.
function violation(field: string, description: string): FieldViolation {
  return { field: field.replace(/^(order|appointment)_json(?=$|[.[])/, "$1"), description };
}

function codeName(code: number): string {
  return grpc.status[code] ?? "UNKNOWN";
}

/** The error of one item of a batch or stream (returned in its place, not thrown). */
export function errorFromItem(error: Error__Output): OrderPolicyError {
  const code = codeName(error.code);
  const Kind = errorClass(code);
  return new Kind(error.message, {
    code, reason: error.reason, fieldViolations: error.field_violations.map((v) => violation(v.field, v.description)),
  });
}

// google.rpc.Status, BadRequest and ErrorInfo, and grpc.health.v1's response, wire-compatible
// under a private name: no googleapis package needed.
const RPC = protobuf.Root.fromJSON({
  nested: {
    Any: { fields: { type_url: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } },
    Status: {
      fields: { code: { type: "int32", id: 1 }, message: { type: "string", id: 2 }, details: { rule: "repeated", type: "Any", id: 3 } },
    },
    FieldViolation: { fields: { field: { type: "string", id: 1 }, description: { type: "string", id: 2 } } },
    BadRequest: { fields: { field_violations: { rule: "repeated", type: "FieldViolation", id: 1 } } },
    ErrorInfo: { fields: { reason: { type: "string", id: 1 }, domain: { type: "string", id: 2 } } },
    HealthCheckResponse: { fields: { status: { type: "int32", id: 1 } } },
  },
});
export const HEALTH_RESPONSE = RPC.lookupType("HealthCheckResponse");

interface AnyMessage { type_url: string; value: Uint8Array }

/** The error of a failed call, with the field violations and reason of its rich status. */
export function errorFromRpc(err: unknown): OrderPolicyError {
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e?.code !== "number") return new OrderPolicyError(String((err as Error)?.message ?? err));
  const code = codeName(e.code);
  let reason = "";
  const violations: FieldViolation[] = [];
  for (const raw of e.metadata?.get("grpc-status-details-bin") ?? []) {
    const status = RPC.lookupType("Status").decode(raw as Buffer) as unknown as { details: AnyMessage[] };
    for (const detail of status.details) {
      const kind = detail.type_url.split("/").pop();
      if (kind === "google.rpc.BadRequest") {
        const bad = RPC.lookupType("BadRequest").decode(detail.value) as unknown as { field_violations: FieldViolation[] };
        violations.push(...bad.field_violations.map((v) => violation(v.field, v.description)));
      } else if (kind === "google.rpc.ErrorInfo") {
        reason = (RPC.lookupType("ErrorInfo").decode(detail.value) as unknown as { reason: string }).reason;
      }
    }
  }
  const Kind = errorClass(code);
  return new Kind(e.details || code.toLowerCase(), { code, reason, fieldViolations: violations });
}
