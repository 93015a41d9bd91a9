// The Node.js client of the segmentation service: one call per image, or one stream per video.
import * as grpc from "@grpc/grpc-js";
import type { Composite } from "./generated/segmentation/v1/Composite";
import type { MaskEncoding } from "./generated/segmentation/v1/MaskEncoding";
import type { ModelInfo__Output } from "./generated/segmentation/v1/ModelInfo";
import type { SegmentationServiceClient } from "./generated/segmentation/v1/SegmentationService";
import type { SegmentResponse__Output } from "./generated/segmentation/v1/SegmentResponse";
import { loadApi } from "./proto";
import {
  checkedPolicy,
  type Frame,
  isSilence,
  ResumableStream,
  type RetryPolicy,
  SegmentationError,
  shouldRetry,
  type StreamStats,
} from "./resumable";

const SERVICE = "segmentation.v1.SegmentationService";
// Pings on idle connections so that dead peers are found; the server accepts pings every 10 s
// or more, so 20 s keeps well clear of its limit.
const KEEPALIVE_TIME_MS = 20_000;
const KEEPALIVE_TIMEOUT_MS = 10_000;

export interface ClientOptions {
  /** TLS is on when this is set or any certificate is given (the system's CAs when none). */
  tls?: boolean;
  rootCertificates?: Buffer; // PEM CA of the server
  clientCertificate?: Buffer; // PEM, for servers that require mutual TLS
  clientKey?: Buffer;
  token?: string; // sent as `authorization: Bearer <token>` on every call
  /** With a target that resolves to several replicas (`dns:///name:port`, `ipv4:a:p,b:p`),
   * round_robin spreads new streams over all of them; pick_first sends all to one. */
  loadBalancing?: "round_robin" | "pick_first";
  maxMessageBytes?: number;
  retryPolicy?: Partial<RetryPolicy>; // how stream() reconnects when its replica drains or dies
}

export interface SegmentOptions {
  model?: string;
  maskWidth?: number; // 0: the image's own size
  maskHeight?: number;
  maskEncoding?: MaskEncoding; // PNG by default
  timeoutMs?: number;
}

export interface StreamOptions {
  streamId?: string; // the server assigns one when empty
  model?: string;
  maskWidth?: number;
  maskHeight?: number;
  maskEncoding?: MaskEncoding; // RAW_U8 by default
  temporalSmoothing?: number;
  edgeAwareUpscale?: boolean;
  composite?: Composite; // answers carry the composited frame instead of a mask
  /** A stream the server ended for silence (DEADLINE_EXCEEDED) reopens when the next frame
   * comes, instead of throwing. */
  reopenAfterSilence?: boolean;
}

/** `new SegmentationClient("host:50051", options)`; `close()` when done. */
export class SegmentationClient {
  readonly retryPolicy: RetryPolicy;
  /** Failover of all this client's streams so far. */
  readonly streamStats: StreamStats = { reconnects: 0, framesDroppedLocally: 0 };
  private readonly stub: SegmentationServiceClient;
  private readonly token?: string;

  constructor(
    readonly target: string,
    options: ClientOptions = {},
  ) {
    this.retryPolicy = checkedPolicy(options.retryPolicy);
    this.token = options.token;
    const maxBytes = options.maxMessageBytes ?? 64 << 20;
    // segment() and listModels() retry UNAVAILABLE through gRPC's own retry policy: each
    // attempt is balanced anew, so it lands on another replica.
    const serviceConfig = {
      loadBalancingConfig: [{ [options.loadBalancing ?? "round_robin"]: {} }],
      methodConfig: [
        {
          name: [
            { service: SERVICE, method: "Segment" },
            { service: SERVICE, method: "ListModels" },
          ],
          retryPolicy: {
            maxAttempts: 4,
            initialBackoff: "0.05s",
            maxBackoff: "1s",
            backoffMultiplier: 2,
            retryableStatusCodes: ["UNAVAILABLE"],
          },
        },
      ],
    };
    const channelOptions: grpc.ChannelOptions = {
      "grpc.max_receive_message_length": maxBytes,
      "grpc.max_send_message_length": maxBytes,
      "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
      "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.service_config": JSON.stringify(serviceConfig),
    };
    const secure = options.tls || options.rootCertificates || options.clientCertificate;
    const credentials = secure
      ? grpc.credentials.createSsl(options.rootCertificates ?? null, options.clientKey ?? null, options.clientCertificate ?? null)
      : grpc.credentials.createInsecure();
    const Service = loadApi().SegmentationService;
    this.stub = new Service(target, credentials, channelOptions);
  }

  close(): void {
    this.stub.close();
  }

  /** Waits until the channel is connected (the server is up). */
  waitUntilReady(timeoutMs = 30_000): Promise<void> {
    return new Promise((resolve, reject) =>
      this.stub.waitForReady(Date.now() + timeoutMs, (error) => (error ? reject(error) : resolve())),
    );
  }

  listModels(): Promise<ModelInfo__Output[]> {
    return new Promise((resolve, reject) =>
      this.stub.ListModels({}, this.metadata(), (error, response) =>
        error ? reject(refusal(error)) : resolve(response!.models),
      ),
    );
  }

  /** Segments one image. The mask is the image's own size unless a size is given. */
  segment(jpeg: Buffer | Uint8Array, options: SegmentOptions = {}): Promise<SegmentResponse__Output> {
    const request = {
      jpeg: Buffer.isBuffer(jpeg) ? jpeg : Buffer.from(jpeg.buffer, jpeg.byteOffset, jpeg.byteLength),
      model: options.model ?? "",
      maskWidth: options.maskWidth ?? 0,
      maskHeight: options.maskHeight ?? 0,
      maskEncoding: options.maskEncoding ?? "MASK_ENCODING_PNG",
    };
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    return new Promise((resolve, reject) =>
      this.stub.Segment(request, this.metadata(), { deadline }, (error, response) =>
        error ? reject(refusal(error)) : resolve(response!),
      ),
    );
  }

  /** Sends `frames` as one video stream; iterate the result for one answer per frame, in order
   * (`for await (const answer of client.stream(frames))`). See docs/client-contract.md: when the
   * replica drains or dies the stream reopens on another one with the same config and id, and
   * frames lost meanwhile are answered DROPPED "reconnecting"; a refused stream, or one no
   * replica answered for `retryPolicy.giveUpAfterMs`, throws a SegmentationError. */
  stream(frames: AsyncIterable<Frame>, options: StreamOptions = {}): ResumableStream {
    const config = {
      streamId: options.streamId ?? "",
      model: options.model ?? "",
      maskWidth: options.maskWidth ?? 0,
      maskHeight: options.maskHeight ?? 0,
      maskEncoding: options.maskEncoding ?? "MASK_ENCODING_RAW_U8",
      temporalSmoothing: options.temporalSmoothing ?? 0,
      edgeAwareUpscale: options.edgeAwareUpscale ?? false,
      ...(options.composite ? { composite: options.composite } : {}),
    };
    const reopen = options.reopenAfterSilence ? (code: grpc.status) => shouldRetry(code) || isSilence(code) : shouldRetry;
    return new ResumableStream(
      () => this.stub.StreamSegment(this.metadata()),
      config,
      frames,
      this.retryPolicy,
      reopen,
      this.streamStats,
    );
  }

  private metadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.token) metadata.set("authorization", `Bearer ${this.token}`);
    return metadata;
  }
}

function refusal(error: grpc.ServiceError): SegmentationError {
  return new SegmentationError(error.code, error.details ?? "");
}
