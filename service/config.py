"""Every setting of the service, in one dataclass.

Each field is a `segmentation-server` flag (`--max-queue-delay-ms`) with an environment
fallback (`SEGMENTATION_MAX_QUEUE_DELAY_MS`); the flag wins. Nothing else reads the environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, get_args, get_origin, get_type_hints

from models.fetch import default_model_dir
from models.registry import MODELS
from service.batching.batcher import BatchPolicy

ENV_PREFIX = "SEGMENTATION_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _default_model_dir() -> str:
    return str(default_model_dir())


def _setting(default: Any, help: str, **kwargs: Any) -> Any:
    if callable(default):
        return field(default_factory=default, metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass(frozen=True)
class ServiceConfig:
    address: str = _setting("0.0.0.0:50051", "gRPC listen address, HOST:PORT")
    metrics_port: int = _setting(
        9090, "Prometheus metrics port on all interfaces; 0 picks a free one; -1 turns it off"
    )
    models: tuple[str, ...] = _setting(
        ("selfie-general", "selfie-landscape"), "models to load, comma-separated"
    )
    default_model: str = _setting("selfie-general", "model used when a request names none")
    model_dir: str = _setting(_default_model_dir, "cache of model files (checked by sha256)")
    fetch_models: bool = _setting(
        True, "fetch missing model files from the package registry at start"
    )
    fetch_models_only: bool = _setting(False, "fetch and check the model files, then exit")
    engine: str = _setting(
        "auto",
        "tflite, tensorflow, or auto: TensorFlow on a GPU, else the faster of the two measured "
        "at start; model-free answers a constant mask without running any model, to measure "
        "the front end alone (capacity tests only)",
    )
    engine_batch_sizes: tuple[int, ...] = _setting(
        (1, 2, 4, 8, 16, 32),
        "batch sizes the TensorFlow engine pads to, each warmed up at start, comma-separated",
    )
    engine_mixed_precision: bool = _setting(
        False, "TensorFlow on a GPU: float16 compute (grappler's auto mixed precision)"
    )
    engine_xla: bool = _setting(False, "TensorFlow: compile the model with XLA (jit_compile)")
    deeplab_path: str = _setting(
        "", "a DeepLab v3 frozen graph (.pb) or SavedModel to serve as model `deeplabv3`"
    )
    deeplab_batch_sizes: tuple[int, ...] = _setting(
        (1, 2, 4, 8),
        "batch sizes the DeepLab network pads to, each warmed up at start, comma-separated",
    )
    deeplab_input_tensor: str = _setting(
        "", "the DeepLab graph's normalised input; empty: sub_7:0, else found in the graph"
    )
    deeplab_logits_tensor: str = _setting(
        "", "the DeepLab graph's logits; empty: ResizeBilinear_3:0, else ResizeBilinear_2:0"
    )
    engine_threads: int = _setting(
        1,
        "CPU threads of each copy of a model's interpreter (TFLite) or of TensorFlow's ops; "
        "on a CPU, more batches in flight use the cores better than more threads per batch",
    )
    decode_workers: int = _setting(
        lambda: os.cpu_count() or 1, "threads that decode JPEG frames and encode masks"
    )
    # The batching options: defaults and checks are BatchPolicy's.
    max_batch_size: int = _setting(BatchPolicy.max_batch_size, "frames in one batch at most")
    max_queue_delay_ms: float = _setting(
        BatchPolicy.max_queue_delay_ms,
        "longest a frame waits for others to join its batch, in milliseconds",
    )
    max_batches_in_flight: int = _setting(
        BatchPolicy.max_batches_in_flight,
        "batches run at once per model, each on its own engine thread (TFLite keeps a copy of "
        "the model per batch); while they run, the next batch fills",
    )
    max_frames_in_flight_per_stream: int = _setting(
        2, "frames of one stream in decode/batch/inference at once; one more may wait"
    )
    max_unwritten_answers_per_stream: int = _setting(
        8,
        "frames of one stream read and not yet answered back to it, at most: at the bound the "
        "server stops reading a caller that stops reading (more than "
        "max_frames_in_flight_per_stream + 1)",
    )
    max_frames_in_flight: int = _setting(
        64, "frames in decode/batch/inference at once across all streams; more wait, and drop"
    )
    max_streams: int = _setting(
        256, "open streams at most; more are refused with RESOURCE_EXHAUSTED"
    )
    stream_idle_timeout_s: float = _setting(
        60.0, "a stream that sends nothing for this long is ended (DEADLINE_EXCEEDED)"
    )
    keepalive_time_s: float = _setting(
        30.0, "the server pings an idle connection this often to find dead peers"
    )
    keepalive_timeout_s: float = _setting(10.0, "a ping unanswered this long closes the connection")
    min_client_ping_interval_s: float = _setting(
        10.0, "clients that ping more often than this are disconnected (the client library: 20 s)"
    )
    tls_cert_file: str = _setting("", "PEM certificate chain of the server; turns TLS on")
    tls_key_file: str = _setting("", "PEM private key of the server")
    tls_client_ca_file: str = _setting(
        "", "PEM CA bundle of the clients; turns mutual TLS on (clients must show a certificate)"
    )
    auth_token: str = _setting(
        "", "bearer token callers must send as `authorization: Bearer TOKEN`; empty: none"
    )
    max_frame_bytes: int = _setting(4 << 20, "largest JPEG frame accepted, in bytes")
    max_frame_pixels: int = _setting(3840 * 2160, "largest frame accepted, width*height")
    max_stream_series: int = _setting(
        100, "open streams reported with per-stream metrics series at most"
    )
    shutdown_grace_s: float = _setting(10.0, "how long open streams get to finish on shutdown")
    log_level: str = _setting("INFO", "DEBUG, INFO, WARNING or ERROR")

    def __post_init__(self) -> None:
        positive = (
            "engine_threads",
            "decode_workers",
            "max_frames_in_flight_per_stream",
            "max_unwritten_answers_per_stream",
            "max_frame_bytes",
            "max_frame_pixels",
            "max_stream_series",
            "max_frames_in_flight",
            "max_streams",
        )
        for name in positive:
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be positive; was {value}")
        _ = self.batch_policy  # BatchPolicy checks the batching options
        for name in (
            "shutdown_grace_s",
            "stream_idle_timeout_s",
            "keepalive_time_s",
            "keepalive_timeout_s",
            "min_client_ping_interval_s",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative; was {getattr(self, name)}")
        if self.max_unwritten_answers_per_stream <= self.max_frames_in_flight_per_stream + 1:
            raise ValueError(
                "max_unwritten_answers_per_stream must be more than "
                f"max_frames_in_flight_per_stream + 1 = {self.max_frames_in_flight_per_stream + 1}"
                f" (the frames in flight and the waiting one); was "
                f"{self.max_unwritten_answers_per_stream}"
            )
        if not -1 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be -1..65535; was {self.metrics_port}")
        _host, colon, port = self.address.rpartition(":")
        if not colon or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"address must be HOST:PORT; was {self.address!r}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(
                f"log_level must be one of {', '.join(LOG_LEVELS)}; was {self.log_level!r}"
            )
        if self.engine not in ("tflite", "tensorflow", "auto", "model-free"):
            raise ValueError(
                f"engine must be tflite, tensorflow, auto or model-free; was {self.engine!r}"
            )
        for name in ("engine_batch_sizes", "deeplab_batch_sizes"):
            sizes = getattr(self, name)
            if not sizes or min(sizes) < 1:
                raise ValueError(f"{name} must be positive sizes; was {list(sizes)}")
        if not self.models:
            raise ValueError("models must name at least one model")
        unknown = [name for name in self.models if name not in MODELS]
        if unknown:
            raise ValueError(f"unknown models {unknown}; known models: {sorted(MODELS)}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together; give both or neither")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        if self.default_model not in self.models:
            raise ValueError(
                f"default_model {self.default_model!r} is not among models {list(self.models)}"
            )

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def batch_policy(self) -> BatchPolicy:
        return BatchPolicy(self.max_batch_size, self.max_queue_delay_ms, self.max_batches_in_flight)

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> ServiceConfig:
        """Builds the config from flags, falling back to SEGMENTATION_* variables, then defaults."""
        environ = os.environ if environ is None else environ
        types = get_type_hints(cls)
        parser = argparse.ArgumentParser(
            prog="segmentation-server",
            description="Person segmentation for video calls over gRPC.",
            epilog=f"Every flag also reads {ENV_PREFIX}<FLAG_NAME> from the environment.",
        )
        for setting in fields(cls):
            flag = "--" + setting.name.replace("_", "-")
            env_name = ENV_PREFIX + setting.name.upper()
            default = setting.default
            if default is MISSING:
                default = setting.default_factory()  # type: ignore[misc]
            help_text = f"{setting.metadata['help']} (env {env_name}; default {default!r})"
            # A bare boolean flag (`--fetch-models-only`) means true.
            is_bool = types[setting.name] is bool
            parser.add_argument(
                flag,
                dest=setting.name,
                type=str,
                default=environ.get(env_name),
                help=help_text,
                metavar=setting.name.upper(),
                nargs="?" if is_bool else None,
                const="true" if is_bool else None,
            )
        parsed = vars(parser.parse_args(argv))
        values: dict[str, Any] = {}
        for setting in fields(cls):
            raw = parsed[setting.name]
            if raw is None:
                continue
            try:
                values[setting.name] = _parse_value(raw, types[setting.name])
            except ValueError as error:
                parser.error(f"--{setting.name.replace('_', '-')}: {error}")
        try:
            return cls(**values)
        except ValueError as error:
            parser.error(str(error))


def _parse_value(raw: str, kind: Any) -> Any:
    """A flag's or variable's text as the field's type (`get_type_hints` resolves it)."""
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false; was {raw!r}")
    if kind in (int, float, str):
        return kind(raw)
    if get_origin(kind) is tuple:  # tuple[X, ...]: comma-separated
        item = get_args(kind)[0]
        parts = [item(part.strip()) for part in raw.split(",") if part.strip()]
        return tuple(sorted(parts) if item is int else parts)
    raise TypeError(f"no parser for settings of type {kind}")
