// A real order-policy server for the caller's own tests, started from a bundle on loopback:
//
//   const server = await startServer("path/to/bundle");
//   const client = new OrderPolicyClient(server.address);
//   ...
//   server.kill();
//
// The server is the `order-policy` command (ORDER_POLICY_COMMAND, for example
// `docker run --rm --network host IMAGE`, or `order-policy` on PATH), run as
// `order-policy serve --bundle BUNDLE --host 127.0.0.1 --port PORT --workers 1` on a free port.
import { ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

import type { ChannelCredentials } from "@grpc/grpc-js";

import { OrderPolicyClient } from "./client";
import { OrderPolicyError } from "./errors";

/** A port that was free a moment ago (the OS's choice for port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/** The command that runs `order-policy`: ORDER_POLICY_COMMAND (split on spaces) or `order-policy`. */
export function serverCommand(): string[] {
  const configured = (process.env.ORDER_POLICY_COMMAND ?? "").trim();
  return configured ? configured.split(/\s+/) : ["order-policy"];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A running `order-policy serve` on 127.0.0.1:port; restartable on the same port. */
export class ServerProcess {
  readonly address: string;
  readonly logPath: string;
  private child: ChildProcess | null = null;

  constructor(readonly bundle: string, readonly port: number, readonly args: string[] = [],
    readonly command: string[] = serverCommand(), readonly timeoutMs = 60_000,
    readonly tls?: ChannelCredentials) { // how to reach a server started with --tls-cert/--tls-key
    this.address = `127.0.0.1:${port}`;
    this.logPath = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "order-policy-client-test-")), "server.log");
  }

  /** Start the server and wait until it is SERVING; rejects with its log otherwise. */
  async start(): Promise<this> {
    const [bin, ...pre] = this.command;
    const log = fs.openSync(this.logPath, "a");
    const child = spawn(bin, [...pre, "serve", "--bundle", this.bundle, "--host", "127.0.0.1",
      "--port", String(this.port), "--workers", "1",
      "--admin-address", "127.0.0.1:0", // never collide on the admin port's default (a later flag wins)
      ...this.args], { stdio: ["ignore", log, log], detached: true });
    fs.closeSync(log);
    this.child = child;
    const client = new OrderPolicyClient(this.address, { timeoutMs: 1_000, tls: this.tls });
    const deadline = Date.now() + this.timeoutMs;
    let last = "";
    try {
      while (Date.now() < deadline) {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`order-policy exited before serving:\n${this.log()}`);
        try {
          last = await client.health();
          if (last === "SERVING") return this;
        } catch (err) {
          if (!(err instanceof OrderPolicyError)) throw err;
          last = err.code;
        }
        await sleep(50);
      }
    } finally {
      client.close();
    }
    throw new Error(`order-policy at ${this.address} not SERVING after ${this.timeoutMs} ms (${last}):\n${this.log()}`);
  }

  /** What the server wrote so far. */
  log(): string {
    return fs.existsSync(this.logPath) ? fs.readFileSync(this.logPath, "utf8") : "";
  }

  /** Send a signal to the server's process group (every worker). */
  signal(signal: NodeJS.Signals): void {
    const child = this.child;
    if (child?.pid && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, signal);
      } catch {
        // already gone
      }
    }
  }

  /** Kill the server at once (SIGKILL), as a crash or an evicted pod would, and wait for its end. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const ended = new Promise((r) => child.once("exit", r));
    this.signal("SIGKILL");
    await ended;
  }

  /** Kill the server and start it again on the same port. */
  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }
}

/** Start a real `order-policy serve` of `bundle` on a free loopback port (kill it when done). For
 * a TLS server pass its flags in `args` and the credentials to reach it in `tls`. */
export async function startServer(bundle: string, args: string[] = [], tls?: ChannelCredentials): Promise<ServerProcess> {
  return new ServerProcess(bundle, await freePort(), args, serverCommand(), 60_000, tls).start();
}
