// segmentation-client for Node.js: JPEG frames of video calls in, person masks out.
export { SegmentationClient } from "./client";
export type { ClientOptions, SegmentOptions, StreamOptions } from "./client";
export {
  DEFAULT_RETRY_POLICY,
  RECONNECTING,
  ResumableStream,
  SegmentationError,
} from "./resumable";
export type { Answer, Frame, RetryPolicy, StreamStats } from "./resumable";
export { status } from "@grpc/grpc-js";
