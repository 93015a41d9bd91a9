// The Node client's driver of the conformance scenarios: reads a scenario's spec (JSON, argv[2]),
// streams its frames through SegmentationClient.stream(), prints what it saw (JSON). Spec and
// output are those of every client's driver (scenarios.py).
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { SegmentationClient, SegmentationError, status } = require(
  process.env.SEGMENTATION_NODE_CLIENT || path.join(__dirname, "..", "..", "..", "clients", "node"),
);

async function main(spec) {
  const jpegs = spec.jpegs.map((file) => fs.readFileSync(file));
  const corrupt = new Set(spec.corrupt || []);
  const pauseAfter = spec.pause_after_frame ?? -1;
  const pauseMs = (spec.pause_s ?? 0) * 1000;
  const pem = (name) => (spec[name] ? fs.readFileSync(spec[name]) : undefined);
  const client = new SegmentationClient(spec.target, {
    token: spec.token || undefined,
    rootCertificates: pem("root_certificates"),
    clientCertificate: pem("client_certificate"),
    clientKey: pem("client_key"),
    retryPolicy: {
      answerTimeoutMs: (spec.answer_timeout_s ?? 2) * 1000,
      giveUpAfterMs: (spec.give_up_after_s ?? 15) * 1000,
    },
  });
  async function* camera() {
    const started = performance.now();
    for (let frameId = 0; frameId < spec.frames; frameId++) {  // open loop at the spec's rate
      const at = started + (frameId * 1000) / spec.fps + (frameId > pauseAfter ? pauseMs : 0);
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, at - performance.now())));
      const jpeg = corrupt.has(frameId) ? Buffer.from("this is not a JPEG") : jpegs[frameId % jpegs.length];
      yield { frameId, jpeg, captureTimestampUs: frameId * 33333 };
    }
  }
  const stream = client.stream(camera(), {
    streamId: spec.stream_id || "",
    model: spec.model || "",
    reopenAfterSilence: Boolean(spec.reopen_after_silence),
  });
  const answers = [];
  let error = null;
  try {
    for await (const a of stream) {
      answers.push([a.frameId, a.status, a.errorReason, a.errorCode, a.mask !== null && a.mask.data.length > 0, a.captureTimestampUs]);
    }
  } catch (failure) {
    if (!(failure instanceof SegmentationError)) throw failure;
    error = { code: status[failure.code], details: failure.details };
  }
  client.close();
  return { answers, error, reconnects: stream.stats.reconnects, dropped_locally: stream.stats.framesDroppedLocally };
}

main(JSON.parse(process.argv[2])).then(
  (result) => {
    process.stdout.write(JSON.stringify(result) + "\n");
    process.exit(0);
  },
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
