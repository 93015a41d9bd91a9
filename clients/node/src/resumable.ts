// One video stream that outlives its replica: reopened on drain or death, one answer per frame.
//
// This module keeps the client contract (docs/client-contract.md), as the Python library's
// resumable.py does: when the call ends with an error its reopen rule accepts (UNAVAILABLE,
// RESOURCE_EXHAUSTED; with reopenAfterSilence also DEADLINE_EXCEEDED, the server ending a silent
// stream), or when frames were sent and no answer came for answerTimeoutMs (a replica that died
// without closing the connection), it reopens the call with the same config and stream id after
// a backoff. The channel's load balancing picks the replica. The caller still gets exactly one
// answer per frame, in frame order: every frame sent to the lost call and never answered, and
// every frame that arrives while no call is open, is answered here, DROPPED with errorReason
// "reconnecting". Only when no replica has answered for giveUpAfterMs does the stream throw a
// SegmentationError.
import * as grpc from "@grpc/grpc-js";
import type { StreamConfig } from "./generated/segmentation/v1/StreamConfig";
import type { StreamSegmentRequest } from "./generated/segmentation/v1/StreamSegmentRequest";
import type { StreamSegmentResponse__Output } from "./generated/segmentation/v1/StreamSegmentResponse";

export const RECONNECTING = "reconnecting"; // errorReason of the frames the client answers DROPPED

export interface Frame {
  frameId: number;
  jpeg: Buffer | Uint8Array;
  captureTimestampUs?: number;
}

export type Answer = StreamSegmentResponse__Output;

export interface RetryPolicy {
  initialBackoffMs: number; // the first reconnect waits up to this long
  maxBackoffMs: number; // no wait is longer, however many attempts failed
  backoffMultiplier: number;
  answerTimeoutMs: number; // frames sent and no answer for this long: the replica is lost
  giveUpAfterMs: number; // no replica answered for this long: the stream throws
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  initialBackoffMs: 50,
  maxBackoffMs: 1000,
  backoffMultiplier: 2,
  answerTimeoutMs: 2000,
  giveUpAfterMs: 15000,
};

export function checkedPolicy(policy: Partial<RetryPolicy> = {}): RetryPolicy {
  const merged = { ...DEFAULT_RETRY_POLICY, ...policy };
  for (const name of ["initialBackoffMs", "maxBackoffMs", "answerTimeoutMs", "giveUpAfterMs"] as const) {
    if (!(merged[name] > 0)) throw new RangeError(`${name} must be positive; was ${merged[name]}`);
  }
  if (!(merged.backoffMultiplier >= 1)) {
    throw new RangeError(`backoffMultiplier must be >= 1; was ${merged.backoffMultiplier}`);
  }
  return merged;
}

/** The wait before reconnect `attempt` (0 first): full jitter spreads a drained replica's
 * streams over time instead of moving them all at once. */
export function backoffMs(policy: RetryPolicy, attempt: number): number {
  const ceiling = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * policy.backoffMultiplier ** attempt);
  return Math.random() * ceiling;
}

/** The service refused a call; `code` is the gRPC status code. */
export class SegmentationError extends Error {
  constructor(
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`${grpc.status[code]}: ${details}`);
    this.name = "SegmentationError";
  }
}

// Codes that say "this replica cannot serve the stream now; another one, or later, may".
const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.RESOURCE_EXHAUSTED]);

export function shouldRetry(code: grpc.status): boolean {
  return RETRYABLE.has(code);
}

export function isSilence(code: grpc.status): boolean {
  return code === grpc.status.DEADLINE_EXCEEDED;
}

export interface StreamStats {
  reconnects: number; // calls reopened after a retryable end or an answer timeout
  framesDroppedLocally: number; // frames answered DROPPED "reconnecting" by the client
}

type Event = { kind: "answer"; response: Answer } | { kind: "end"; error: grpc.ServiceError | null };
const END = Symbol("end of the caller's frames");
const TIMEOUT = Symbol("timeout");

/** A queue one consumer awaits, with a timeout. */
class Mailbox<T> {
  private items: T[] = [];
  private waiter: (() => void) | null = null;

  push(item: T): void {
    this.items.push(item);
    this.waiter?.();
  }

  get size(): number {
    return this.items.length;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  /** Wakes a waiting take(), which then returns TIMEOUT if nothing came. */
  interrupt(): void {
    this.waiter?.();
  }

  /** Until an item is there, without taking it. */
  async wait(): Promise<void> {
    while (this.items.length === 0) {
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = null;
    }
  }

  async take(timeoutMs = Infinity): Promise<T | typeof TIMEOUT> {
    if (this.items.length === 0) {
      await new Promise<void>((resolve) => {
        const timer = Number.isFinite(timeoutMs) ? setTimeout(resolve, Math.max(timeoutMs, 1)) : null;
        this.waiter = () => {
          if (timer) clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = null;
    }
    return this.items.length ? (this.items.shift() as T) : TIMEOUT;
  }
}

/** The frame's bytes as a Buffer without a copy (Buffer.from(buffer) would copy them). */
function asBuffer(jpeg: Buffer | Uint8Array): Buffer {
  return Buffer.isBuffer(jpeg) ? jpeg : Buffer.from(jpeg.buffer, jpeg.byteOffset, jpeg.byteLength);
}

export type OpenCall = () => grpc.ClientDuplexStream<StreamSegmentRequest, Answer>;

/** Use as `for await (const answer of stream)`; `stats` counts reconnects and local drops. */
export class ResumableStream implements AsyncIterable<Answer> {
  readonly stats: StreamStats = { reconnects: 0, framesDroppedLocally: 0 };
  private readonly incoming = new Mailbox<Frame | typeof END>();
  private unanswered: { frame: Frame; sentAt: number }[] = [];
  private framesEnded = false;
  private lastAnswerAt = 0;

  constructor(
    private readonly openCall: OpenCall,
    private readonly config: StreamConfig,
    private readonly frames: AsyncIterable<Frame>,
    private readonly policy: RetryPolicy,
    private readonly shouldReopen: (code: grpc.status) => boolean,
    private readonly totals?: StreamStats,
  ) {}

  async *[Symbol.asyncIterator](): AsyncGenerator<Answer> {
    let pumpError: unknown = null;
    let stopped = false;
    const pump = (async () => {
      try {
        for await (const frame of this.frames) {
          if (stopped) break;
          this.incoming.push(frame);
        }
      } catch (error) {
        pumpError = error; // the caller's own frames threw: theirs to see
      } finally {
        this.incoming.push(END);
      }
    })();
    let attempt = 0;
    let lostSince: number | null = null; // no answer from any replica since then
    let cause = "";
    try {
      while (true) {
        const call = this.openCall();
        const events = new Mailbox<Event>();
        call.on("data", (response: Answer) => events.push({ kind: "answer", response }));
        call.on("error", (error: grpc.ServiceError) => events.push({ kind: "end", error }));
        call.on("end", () => events.push({ kind: "end", error: null }));
        const sending = this.send(call);
        let error: grpc.ServiceError | null = null;
        let timedOut = false;
        try {
          for await (const answer of this.answers(events)) {
            lostSince = null;
            attempt = 0;
            yield answer;
          }
        } catch (failure) {
          if (failure === TIMEOUT) timedOut = true;
          else error = failure as grpc.ServiceError;
        } finally {
          call.cancel(); // a no-op once the call has ended
          await sending;
        }
        if (!timedOut && error === null) {
          // Ended OK: the caller's frames ended and every one was answered.
          for (const { frame } of this.unanswered.splice(0)) yield this.dropLocally(frame);
          return;
        }
        if (error !== null && !this.shouldReopen(error.code)) {
          throw new SegmentationError(error.code, error.details ?? "");
        }
        cause = timedOut ? `no answer for ${this.policy.answerTimeoutMs} ms` : `${grpc.status[error!.code]}: ${error!.details}`;
        // The frames the lost call never answered, in order, before any later frame.
        for (const { frame } of this.unanswered.splice(0)) yield this.dropLocally(frame);
        if (this.framesEnded && this.incoming.size === 0) return;
        if (error !== null && isSilence(error.code)) {
          // The caller's silence, not a lost replica: reopen when a frame comes.
          await this.incoming.wait();
          if (this.incoming.peek() === END) return;
          this.count("reconnects");
          continue;
        }
        const now = Date.now();
        lostSince = lostSince ?? now;
        if (now - lostSince >= this.policy.giveUpAfterMs) {
          throw new SegmentationError(
            grpc.status.UNAVAILABLE,
            `no replica answered stream '${this.config.streamId}' for ${((now - lostSince) / 1000).toFixed(1)} s; last: ${cause}`,
          );
        }
        this.count("reconnects");
        const until = Date.now() + backoffMs(this.policy, attempt);
        attempt += 1;
        // The frames that arrive while no call is open.
        while (Date.now() < until) {
          const item = await this.incoming.take(until - Date.now());
          if (item === TIMEOUT) break;
          if (item === END) {
            this.framesEnded = true;
            break;
          }
          yield this.dropLocally(item);
        }
        if (this.framesEnded && this.incoming.size === 0) return;
      }
    } finally {
      stopped = true;
      if (pumpError !== null) throw pumpError;
    }
  }

  /** Writes the config, then each frame as it comes; a frame is unanswered from the moment it
   * is taken, so that one the write loses is still answered. */
  private async send(call: grpc.ClientDuplexStream<StreamSegmentRequest, Answer>): Promise<void> {
    let ended = false;
    const callEnded = new Promise<void>((resolve) => {
      const onEnd = () => {
        ended = true;
        this.incoming.interrupt(); // the wait below is for this call's frames only
        resolve();
      };
      call.once("status", onEnd);
      call.once("error", onEnd);
    });
    // Waits while the transport's buffer is full (a slow replica slows its own stream).
    const write = async (request: StreamSegmentRequest) => {
      if (!call.write(request)) await Promise.race([new Promise((resolve) => call.once("drain", resolve)), callEnded]);
    };
    await write({ config: this.config });
    while (!ended) {
      const item = await this.incoming.take();
      if (item === TIMEOUT) continue;
      if (item === END) {
        this.framesEnded = true;
        call.end();
        return;
      }
      this.unanswered.push({ frame: item, sentAt: Date.now() });
      if (ended) return;
      await write({
        frame: { frameId: item.frameId, captureTimestampUs: item.captureTimestampUs ?? 0, jpeg: asBuffer(item.jpeg) },
      });
    }
  }

  /** The call's answers, matched to the frames sent; throws TIMEOUT when frames wait for an
   * answer longer than the policy allows, and the call's error when it ends with one. */
  private async *answers(events: Mailbox<Event>): AsyncGenerator<Answer> {
    const timeoutMs = this.policy.answerTimeoutMs;
    while (true) {
      const waitedSince = this.unanswered.length ? Math.max(this.unanswered[0].sentAt, this.lastAnswerAt) : null;
      if (waitedSince !== null && Date.now() - waitedSince >= timeoutMs) throw TIMEOUT;
      // Wake when the oldest unanswered frame would time out, or soon, since one may be sent.
      const waitMs = waitedSince === null ? timeoutMs / 4 : Math.min(timeoutMs / 4, waitedSince + timeoutMs - Date.now());
      const event = await events.take(waitMs);
      if (event === TIMEOUT) continue;
      if (event.kind === "end") {
        if (event.error !== null) throw event.error;
        return;
      }
      const response = event.response;
      this.lastAnswerAt = Date.now();
      if (!this.config.streamId) this.config.streamId = response.streamId; // reopen under it
      // The server answers the frames it read in order: any before this one it never read.
      while (this.unanswered.length && this.unanswered[0].frame.frameId !== response.frameId) {
        yield this.dropLocally(this.unanswered.shift()!.frame);
      }
      this.unanswered.shift();
      yield response;
    }
  }

  private dropLocally(frame: Frame): Answer {
    this.count("framesDroppedLocally");
    return {
      frameId: frame.frameId,
      captureTimestampUs: frame.captureTimestampUs ?? 0,
      status: "DROPPED",
      mask: null,
      errorReason: RECONNECTING,
      errorCode: "FRAME_ERROR_REASON_RECONNECTING",
      errorMessage: "the stream's replica was lost; the client is reopening the stream",
      timings: null,
      batchSize: 0,
      streamId: this.config.streamId ?? "",
      composited: null,
    };
  }

  private count(name: keyof StreamStats): void {
    this.stats[name] += 1;
    if (this.totals) this.totals[name] += 1;
  }
}
