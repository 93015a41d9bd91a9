// The API, loaded at run time from the proto shipped beside this code; its types are generated
// from the same file when the package is built (src/generated, never committed).
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import * as path from "node:path";
import type { ProtoGrpcType } from "./generated/segmentation";

// Must match the flags scripts/build.js gives proto-loader-gen-types: the types describe these.
const LOADER_OPTIONS: protoLoader.Options = {
  longs: Number, // frame ids and timestamps stay below 2^53
  enums: String,
  defaults: true,
  oneofs: true,
};

export const PROTO_FILE = path.join(__dirname, "proto", "segmentation", "v1", "segmentation.proto");

export function loadApi(): ProtoGrpcType["segmentation"]["v1"] {
  const definition = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);
  const api = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  return api.segmentation.v1;
}
