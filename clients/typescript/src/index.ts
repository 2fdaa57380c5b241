// TypeScript client of order-policy: "may this lab-test order be cancelled right now?".
//
//   const client = new OrderPolicyClient("order-policy.example.svc:50051");
//   const decision = await client.decide({ order, action: "cancel_order" });
//   decision.outcome;                              // "ALLOW" | "DENY"
//   decision.followUps.map((f) => [f.code, f.httpMethod, f.path]);
export {
  CallOptions, channelOptions, ClientOptions, DEFAULT_TIMEOUT_MS, normalizeTarget, OrderPolicyClient, Result, SERVICE_CONFIG,
} from "./client";
export {
  Action, BundleRef, Decision, DecideInput, Explanation, FollowUp, JsonInput, Outcome, Reason,
} from "./convert";
export {
  DeadlineExceeded, FieldViolation, InvalidArgument, OrderPolicyError, RevisionNotLoaded, Unavailable,
} from "./errors";
