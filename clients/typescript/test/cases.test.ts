// Every case of the bundle, through each call of the client, against the real server.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { OrderPolicyClient, OrderPolicyError, Result } from "../src";
import { ServerProcess, startServer } from "../src/testing";
import { Case, caseInput, differences, env, loadCases } from "./support";

describe("every bundle case", () => {
  let server: ServerProcess;
  let client: OrderPolicyClient;
  const cases: Case[] = loadCases();

  before(async () => {
    server = await startServer(env("ORDER_POLICY_TEST_BUNDLE"));
    client = new OrderPolicyClient(server.address, { timeoutMs: 10_000 });
  });
  after(async () => {
    client?.close();
    await server?.kill();
  });

  it("decide() gives each case's outcome, reasons and follow-ups, or InvalidArgument naming its field", async () => {
    const wrong: string[] = [];
    for (const c of cases) {
      let got: Result;
      try {
        got = await client.decide(caseInput(c));
      } catch (err) {
        if (!(err instanceof OrderPolicyError)) throw err;
        got = err;
      }
      wrong.push(...differences(c, got));
    }
    assert.deepEqual(wrong, []);
  });

  it("decideBatch() answers every case in order, an invalid one with its error in its place", async () => {
    const wrong: string[] = [];
    for (let start = 0; start < cases.length; start += 100) {
      const chunk = cases.slice(start, start + 100);
      const results = await client.decideBatch(chunk.map((c, i) => caseInput(c, `r${start + i}`)));
      assert.equal(results.length, chunk.length);
      chunk.forEach((c, i) => wrong.push(...differences(c, results[i])));
    }
    assert.deepEqual(wrong, []);
  });

  it("decideStream() answers every case in order over one stream, with each request's id", async () => {
    async function* inputs() {
      for (let i = 0; i < cases.length; i++) yield caseInput(cases[i], `s${i}`);
    }
    const results: Result[] = [];
    for await (const r of client.decideStream(inputs())) results.push(r);
    assert.equal(results.length, cases.length);
    const wrong: string[] = [];
    results.forEach((r, i) => {
      wrong.push(...differences(cases[i], r));
      if (!(r instanceof OrderPolicyError)) assert.equal(r.requestId, `s${i}`);
    });
    assert.deepEqual(wrong, []);
  });
});
