// The client's behaviour against real servers: typed results, invalid input, deadlines,
// restarts hidden by retries, round-robin over replicas, the shared service config.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";

import * as grpc from "@grpc/grpc-js";

import {
  DeadlineExceeded, InvalidArgument, normalizeTarget, OrderPolicyClient, RevisionNotLoaded, SERVICE_CONFIG,
} from "../src";
import { freePort, ServerProcess, startServer } from "../src/testing";
import { allowedCase, Case, caseInput, env, loadCases } from "./support";

const cases: Case[] = loadCases();
const bundle = env("ORDER_POLICY_TEST_BUNDLE");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("calls to one server", () => {
  let server: ServerProcess;
  let client: OrderPolicyClient;
  const c = allowedCase(cases);

  before(async () => {
    server = await startServer(bundle);
    client = new OrderPolicyClient(server.address, { timeoutMs: 10_000 });
  });
  after(async () => {
    client?.close();
    await server?.kill();
  });

  it("a decision is typed and reports the instant it was evaluated at", async () => {
    const now = new Date(c.now);
    const got = await client.decide({ ...caseInput(c), now, explain: true });
    assert.equal(got.outcome, "ALLOW");
    assert.equal(got.allowed, true);
    assert.equal(got.evaluatedAt?.getTime(), now.getTime());
    assert.equal(got.action, c.action);
    assert.equal(got.orderId, (c.order as { id: string }).id);
    assert.ok(got.bundle.revision && got.bundle.digest.length >= 32 && got.decisionId);
    assert.deepEqual(got.reasons.map((r) => r.code).sort(), [...c.expect.reasons].sort());
    assert.ok(got.explanation && got.explanation.matchedRules.length > 0);
    assert.ok(Object.keys(got.explanation.facts).length > 0);
  });

  it("`now` as text in another zone and as a Date are the same instant", async () => {
    const instant = new Date(c.now);
    const shifted = new Date(instant.getTime() - 5 * 3600_000).toISOString().replace("Z", "-05:00");
    const a = await client.decide({ ...caseInput(c), now: shifted });
    const b = await client.decide({ ...caseInput(c), now: instant });
    assert.equal(a.evaluatedAt?.getTime(), instant.getTime());
    assert.deepEqual([a.outcome, a.reasons, a.followUps], [b.outcome, b.reasons, b.followUps]);
  });

  it("order text that is not JSON rejects with InvalidArgument naming `order`", async () => {
    await assert.rejects(client.decide({ order: "{not json", now: c.now }), (err: unknown) => {
      assert.ok(err instanceof InvalidArgument);
      assert.equal(err.code, "INVALID_ARGUMENT");
      assert.equal(err.reason, "request_invalid");
      assert.ok(err.fields.includes("order"), String(err.fields));
      return true;
    });
  });

  it("input the client cannot send rejects before calling", async () => {
    const order = c.order as Record<string, unknown>;
    const fieldOf = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (err) {
        assert.ok(err instanceof InvalidArgument);
        return err.fields;
      }
      assert.fail("no error");
    };
    assert.deepEqual(await fieldOf(client.decide({ order, action: "cancel_ordr" as never })), ["action"]);
    await assert.rejects(client.decide({ order, action: "cancel_ordr" as never }), /did you mean `cancel_order`/);
    assert.deepEqual(await fieldOf(client.decide({ order, now: "2026-03-10T12:00:00" })), ["now"]);
    assert.deepEqual(await fieldOf(client.decide({ order, now: "yesterday" })), ["now"]);
    assert.deepEqual(await fieldOf(client.decide({ order: { n: BigInt(1) } as never })), ["order"]);
  });

  it("an invalid item of a batch or stream is answered in its place", async () => {
    const good = caseInput(c);
    const items = [good, { ...good, now: "2026-03-10T12:00:00" }, { ...good, order: "[]" }, good];
    const streamed = [];
    for await (const r of client.decideStream(items)) streamed.push(r);
    for (const results of [await client.decideBatch(items), streamed]) {
      assert.deepEqual(results.map((r) => r.constructor === Object ? "Decision" : r.constructor.name),
        ["Decision", "InvalidArgument", "InvalidArgument", "Decision"]);
      assert.deepEqual((results[1] as InvalidArgument).fields, ["now"]);
      assert.deepEqual((results[2] as InvalidArgument).fields, ["order"]);
    }
  });

  it("pinning a revision the server does not hold rejects with RevisionNotLoaded", async () => {
    const active = await client.decide(caseInput(c));
    const pinned = await client.decide({ ...caseInput(c), bundleRevision: active.bundle.revision });
    assert.deepEqual(pinned.bundle, active.bundle);
    await assert.rejects(client.decide({ ...caseInput(c), bundleRevision: "no-such-revision" }), RevisionNotLoaded);
  });

  it("health() says SERVING once the server has its bundle", async () => {
    assert.equal(await client.health(), "SERVING");
  });
});

describe("deadlines, restarts and replicas", () => {
  const c = allowedCase(cases);

  it("a server that stops answering (SIGSTOP) rejects the call with DeadlineExceeded at its deadline", async () => {
    const server = await startServer(bundle);
    const client = new OrderPolicyClient(server.address, { timeoutMs: 500 });
    try {
      await client.decide(caseInput(c));
      server.signal("SIGSTOP");
      const started = Date.now();
      try {
        await assert.rejects(client.decide(caseInput(c)), DeadlineExceeded);
      } finally {
        server.signal("SIGCONT");
      }
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 400 && elapsed < 5_000, `${elapsed} ms`);
      assert.equal((await client.decide(caseInput(c), { timeoutMs: 10_000 })).outcome, "ALLOW");
    } finally {
      client.close();
      await server.kill();
    }
  });

  it("a call with nobody listening ends at its deadline", async () => {
    const client = new OrderPolicyClient(`127.0.0.1:${await freePort()}`, { timeoutMs: 300 });
    const started = Date.now();
    await assert.rejects(client.decide({ order: { id: "x" } }), (err: Error) => /DeadlineExceeded|Unavailable/.test(err.name));
    assert.ok(Date.now() - started < 5_000);
    client.close();
  });

  it("a server killed and restarted mid-run is not seen by the caller", async () => {
    const server = await startServer(bundle);
    const client = new OrderPolicyClient(server.address, { timeoutMs: 30_000 });
    const failures: string[] = [];
    const counts = [0, 0];
    let phase = 0;
    let done = false;
    const caller = async () => {
      while (!done) {
        try {
          await client.decide(caseInput(c));
          counts[phase]++;
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    try {
      const callers = [caller(), caller()];
      await sleep(500);
      await server.restart();
      phase = 1;
      await sleep(1_000);
      done = true;
      await Promise.all(callers);
    } finally {
      done = true;
      client.close();
      await server.kill();
    }
    assert.deepEqual(failures, []);
    assert.ok(counts[0] > 0 && counts[1] > 0, String(counts));
  });

  it("calls are spread round-robin over two servers (each one's revision is seen)", async () => {
    const other = fs.mkdtempSync(path.join(os.tmpdir(), "order-policy-bundle-"));
    fs.cpSync(bundle, other, { recursive: true });
    const manifest = path.join(other, "manifest.yaml");
    const text = fs.readFileSync(manifest, "utf8");
    assert.match(text, /^revision:.*$/m);
    fs.writeFileSync(manifest, text.replace(/^revision:.*$/m, "revision: 'replica-b'"));
    const [a, b] = await Promise.all([startServer(bundle), startServer(other)]);
    const client = new OrderPolicyClient(`ipv4:${a.address},${b.address}`, { timeoutMs: 10_000 });
    try {
      for (let i = 0; i < 10; i++) await client.decide(caseInput(c));
      const seen: string[] = [];
      for (let i = 0; i < 40; i++) seen.push((await client.decide(caseInput(c))).bundle.revision);
      const counts = new Map<string, number>();
      for (const r of seen) counts.set(r, (counts.get(r) ?? 0) + 1);
      assert.ok(counts.has("replica-b") && counts.size === 2, JSON.stringify([...counts]));
      assert.ok(Math.min(...counts.values()) >= 15, JSON.stringify([...counts]));
    } finally {
      client.close();
      await Promise.all([a.kill(), b.kill()]);
      fs.rmSync(other, { recursive: true, force: true });
    }
  });
});

describe("TLS", () => {
  it("reaches a TLS server with its root; plaintext or an unknown root gets no decision", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "order-policy-tls-"));
    const key = path.join(dir, "key.pem");
    const cert = path.join(dir, "cert.pem");
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
      "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], { stdio: "ignore" });
    const trusted = grpc.credentials.createSsl(fs.readFileSync(cert));
    const c = allowedCase(cases);
    const server = await startServer(bundle, ["--tls-cert", cert, "--tls-key", key], trusted);
    try {
      const client = new OrderPolicyClient(server.address, { tls: trusted, timeoutMs: 10_000 });
      assert.equal((await client.decide(caseInput(c))).outcome, "ALLOW");
      client.close();
      for (const tls of [false, true]) {
        const other = new OrderPolicyClient(server.address, { tls, timeoutMs: 1_000 });
        await assert.rejects(other.decide(caseInput(c)), (err: Error) => /DeadlineExceeded|Unavailable/.test(err.name));
        other.close();
      }
    } finally {
      await server.kill();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("configuration", () => {
  it("uses the Python client's service config file: round_robin, retries on UNAVAILABLE, wait for ready", () => {
    const canonical = JSON.parse(fs.readFileSync(
      path.resolve(__dirname, "..", "..", "..", "python", "order_policy_client", "service_config.json"), "utf8"));
    assert.deepEqual(SERVICE_CONFIG, canonical);
    assert.deepEqual(canonical.loadBalancingConfig, [{ round_robin: {} }]);
    assert.deepEqual(canonical.methodConfig[0].retryPolicy.retryableStatusCodes, ["UNAVAILABLE"]);
    assert.equal(canonical.methodConfig[0].waitForReady, true);
  });

  it("a plain host:port becomes a dns:/// target; targets with a scheme stay", () => {
    assert.equal(normalizeTarget("order-policy.ns.svc:50051"), "dns:///order-policy.ns.svc:50051");
    assert.equal(normalizeTarget("ipv4:10.0.0.1:1,10.0.0.2:1"), "ipv4:10.0.0.1:1,10.0.0.2:1");
    assert.equal(normalizeTarget("dns:///x:1"), "dns:///x:1");
  });

  it("refuses a client without a deadline", () => {
    assert.throws(() => new OrderPolicyClient("127.0.0.1:1", { timeoutMs: 0 }), /timeoutMs/);
  });
});
