// Builds the package: the API's types generated from the repository's proto/ (never committed),
// the proto itself copied beside the compiled code (it is loaded at run time), then tsc.
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const here = path.join(__dirname, "..");
const proto = path.join(here, "..", "..", "proto");
const file = path.join("segmentation", "v1", "segmentation.proto");
const bin = (name) => path.join(here, "node_modules", ".bin", name);
// The loader options the types describe: they must match LOADER_OPTIONS in src/proto.ts.
const loaderFlags = ["--longs=Number", "--enums=String", "--defaults", "--oneofs"];

fs.rmSync(path.join(here, "src", "generated"), { recursive: true, force: true });
fs.rmSync(path.join(here, "dist"), { recursive: true, force: true });
execFileSync(
  bin("proto-loader-gen-types"),
  [...loaderFlags, "--grpcLib=@grpc/grpc-js", "--includeComments", "-I", proto,
   "-O", path.join(here, "src", "generated"), file],
  { stdio: "inherit" },
);
execFileSync(bin("tsc"), ["-p", path.join(here, "tsconfig.json")], { stdio: "inherit" });
fs.mkdirSync(path.join(here, "dist", "proto", "segmentation", "v1"), { recursive: true });
fs.copyFileSync(path.join(proto, file), path.join(here, "dist", "proto", file));
