// Build step: copy the contract (../../protos) and the canonical service config into this
// package, and generate the TypeScript types of the messages and the service (with the
// comments of the .proto files) into src/generated. Nothing here is edited by hand.
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const here = path.resolve(__dirname, "..");
const repo = path.resolve(here, "..", "..");
const protosSrc = path.join(repo, "protos");
const protosOut = path.join(here, "protos");
const generated = path.join(here, "src", "generated");

fs.rmSync(protosOut, { recursive: true, force: true });
fs.rmSync(generated, { recursive: true, force: true });
fs.cpSync(protosSrc, protosOut, { recursive: true, filter: (src) => fs.statSync(src).isDirectory() || src.endsWith(".proto") });
fs.copyFileSync(path.join(repo, "clients", "python", "order_policy_client", "service_config.json"),
  path.join(here, "service_config.json"));

const bin = require.resolve("@grpc/proto-loader/build/bin/proto-loader-gen-types.js");
execFileSync(process.execPath, [
  bin, "--keepCase", "--longs=String", "--enums=String", "--defaults", "--oneofs", "--includeComments",
  "--grpcLib=@grpc/grpc-js", `--includeDirs=${protosOut}`, `--outDir=${generated}`,
  "orderpolicy/v1/order_policy.proto",
], { stdio: "inherit" });
