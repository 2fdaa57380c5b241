// The bundle's own cases (exported as JSON by the repository's tests) and how to compare results.
import * as fs from "node:fs";

import { Decision, DecideInput, InvalidArgument, OrderPolicyError } from "../src";

export interface Case {
  name: string;
  action: "cancel_order" | "cancel_appointment";
  now: string;
  order: unknown;
  order_json: string | null;
  appointment: unknown;
  appointment_json: string | null;
  expect: Record<string, any>;
}

export function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests with \`make client-typescript\``);
  return value;
}

export function loadCases(): Case[] {
  const cases: Case[] = JSON.parse(fs.readFileSync(env("ORDER_POLICY_TEST_CASES"), "utf8"));
  if (cases.length <= 20) throw new Error("the bundle has too few cases to test the clients with");
  return cases;
}

/** What a caller sends for a case: raw JSON text where the case has it, else the JSON data. */
export function caseInput(c: Case, requestId = ""): DecideInput {
  return {
    order: (c.order_json ?? c.order) as DecideInput["order"],
    appointment: (c.appointment_json ?? c.appointment) as DecideInput["appointment"],
    action: c.action,
    now: c.now,
    requestId,
  };
}

const sorted = (xs: string[]) => [...xs].sort();

/** Where `got` differs from the case's expectation (empty: as expected). */
export function differences(c: Case, got: Decision | OrderPolicyError): string[] {
  const exp = c.expect;
  if (exp.error) {
    if (!(got instanceof InvalidArgument)) return [`${c.name}: expected InvalidArgument on \`${exp.error.field}\`, got ${got}`];
    return got.fields.includes(exp.error.field) ? [] : [`${c.name}: expected \`${exp.error.field}\`, got ${got.fields}`];
  }
  if (got instanceof OrderPolicyError) return [`${c.name}: expected ${exp.outcome}, got ${got.name}: ${got.message}`];
  const checks: Record<string, [unknown, unknown]> = {
    outcome: [exp.outcome, got.outcome],
    reasons: [sorted(exp.reasons), sorted(got.reasons.map((r) => r.code))],
    follow_ups: [sorted(exp.follow_ups), sorted(got.followUps.map((f) => f.code))],
  };
  if (exp.rules) {
    checks.rules = [sorted(exp.rules), sorted([...new Set([...got.reasons, ...got.followUps].map((x) => x.ruleId))])];
  }
  if (exp.messages) checks.messages = [sorted(exp.messages), sorted(got.reasons.map((r) => r.message))];
  if (exp.paths) checks.paths = [sorted(exp.paths), sorted(got.followUps.map((f) => f.path).filter((p) => p))];
  return Object.entries(checks)
    .filter(([, [want, have]]) => JSON.stringify(want) !== JSON.stringify(have))
    .map(([what, [want, have]]) => `${c.name}: ${what} expected ${JSON.stringify(want)}, got ${JSON.stringify(have)}`);
}

export function allowedCase(cases: Case[]): Case {
  const found = cases.find((c) => c.expect.outcome === "ALLOW" && c.order_json === null);
  if (!found) throw new Error("the bundle has no ALLOW case with an order object");
  return found;
}
