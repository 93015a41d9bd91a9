"""One config: flags win over SEGMENTATION_* variables, which win over defaults; each value is
read by its field's type and checked once, with a message that names the setting and the value."""

from __future__ import annotations

import dataclasses

import pytest

from service.batching.batcher import BatchPolicy
from service.config import ServiceConfig


def refusal(argv: list[str], environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    """The usage error that stops the program, as one line."""
    with pytest.raises(SystemExit) as stopped:
        ServiceConfig.from_args(argv, environ=environ)
    assert stopped.value.code == 2
    return " ".join(capsys.readouterr().err.split())


def test_defaults() -> None:
    config = ServiceConfig.from_args([], environ={})
    assert config.address == "0.0.0.0:50051"
    assert config.metrics_port == 9090
    assert config.default_model == "selfie-general"
    assert config.engine == "auto"
    assert config.log_level == "INFO"
    assert config.engine_batch_sizes == (1, 2, 4, 8, 16, 32)
    assert config.batch_policy == BatchPolicy()
    assert config.batch_policy.max_queue_delay_ms == pytest.approx(4.0)


def test_environment_fills_in_and_flags_win() -> None:
    environ = {
        "SEGMENTATION_MAX_QUEUE_DELAY_MS": "7.5",
        "SEGMENTATION_MAX_BATCH_SIZE": "4",
        "SEGMENTATION_ENGINE": "tensorflow",
        "SEGMENTATION_MODELS": "selfie-landscape",
        "SEGMENTATION_DEFAULT_MODEL": "selfie-landscape",
        "SEGMENTATION_FETCH_MODELS": "false",
        "SEGMENTATION_FETCH_MODELS_ONLY": "false",
    }
    config = ServiceConfig.from_args(
        ["--max-batch-size", "12", "--engine", "tflite", "--fetch-models-only"], environ=environ
    )
    assert config.fetch_models_only is True
    assert config.max_batch_size == 12
    assert config.engine == "tflite"
    assert config.max_queue_delay_ms == 7.5
    assert config.models == ("selfie-landscape",)
    assert config.fetch_models is False
    assert config.batch_policy == BatchPolicy(12, 7.5, BatchPolicy.max_batches_in_flight)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[(text, True) for text in ("true", "1", "yes", "on", "TRUE", "Yes", " on ")],
        *[(text, False) for text in ("false", "0", "no", "off", "False", "NO")],
    ],
)
def test_booleans_read_the_usual_spellings_from_flags_and_variables(text: str, value: bool) -> None:
    from_flag = ServiceConfig.from_args(["--engine-xla", text], environ={})
    from_variable = ServiceConfig.from_args([], environ={"SEGMENTATION_ENGINE_XLA": text})
    assert from_flag.engine_xla is value
    assert from_variable.engine_xla is value


def test_a_bare_boolean_flag_means_true() -> None:
    environ = {"SEGMENTATION_ENGINE_XLA": "off"}
    assert ServiceConfig.from_args(["--engine-xla"], environ=environ).engine_xla is True


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--fetch-models", "maybe"], {}, "argument --fetch-models: expected true or false"),
        ([], {"SEGMENTATION_FETCH_MODELS": "maybe"}, "SEGMENTATION_FETCH_MODELS: expected true"),
        ([], {"SEGMENTATION_FETCH_MODELS": ""}, "(or 1/0, yes/no, on/off); was ''"),
    ],
)
def test_other_boolean_spellings_are_refused_with_the_spellings_it_takes(
    argv: list[str], environ: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in refusal(argv, environ, capsys)


ENGINES = ("auto", "tflite", "tensorflow", "torch", "model-free")


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_choice_is_taken(engine: str) -> None:
    assert ServiceConfig.from_args(["--engine", engine], environ={}).engine == engine
    assert ServiceConfig.from_args([], environ={"SEGMENTATION_ENGINE": engine}).engine == engine


@pytest.mark.parametrize(
    ("argv", "environ", "prefix"),
    [
        (["--engine", "tf"], {}, "argument --engine: invalid choice: 'tf'"),
        ([], {"SEGMENTATION_ENGINE": "tf"}, "SEGMENTATION_ENGINE: engine must be one of"),
    ],
)
def test_an_unknown_engine_is_refused_with_every_choice(
    argv: list[str], environ: dict[str, str], prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message = refusal(argv, environ, capsys)
    assert prefix in message
    assert "tf'" in message
    for choice in ENGINES:
        assert choice in message


def test_the_choices_are_checked_however_the_config_is_built() -> None:
    with pytest.raises(
        ValueError,
        match="engine must be one of auto, tflite, tensorflow, torch, model-free; was 'tf'",
    ):
        ServiceConfig(engine="tf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="log_level must be one of DEBUG, INFO, WARNING, ERROR"):
        dataclasses.replace(ServiceConfig(), log_level="LOUD")  # type: ignore[arg-type]


def test_choices_read_in_any_case() -> None:
    config = ServiceConfig.from_args(["--log-level", "debug", "--engine", "TFLite"], environ={})
    assert (config.log_level, config.engine) == ("DEBUG", "tflite")
    config = ServiceConfig.from_args([], environ={"SEGMENTATION_LOG_LEVEL": "warning"})
    assert config.log_level == "WARNING"


def test_batch_sizes_keep_the_order_given() -> None:
    config = ServiceConfig.from_args(["--engine-batch-sizes", "1, 4,16"], environ={})
    assert config.engine_batch_sizes == (1, 4, 16)


@pytest.mark.parametrize("sizes", ["8,1", "1,2,2", "0,1,2", "1,-4", ","])
@pytest.mark.parametrize("name", ["engine_batch_sizes", "deeplab_batch_sizes"])
def test_batch_sizes_out_of_order_repeated_or_not_positive_are_refused(
    name: str, sizes: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The engines pad a batch to the next size up: a list out of order is refused, not sorted
    behind the operator's back. The message names the flag, its variable and the value."""
    flag, variable = "--" + name.replace("_", "-"), "SEGMENTATION_" + name.upper()
    shown = sizes.strip(",") or "empty"
    expected = (
        f"{flag} / {variable}: {name} must be positive sizes in ascending order, each once "
        f"(as 1,2,4,8); was {shown}"
    )
    assert expected in refusal([flag, sizes], {}, capsys)
    assert expected in refusal([], {variable: sizes}, capsys)


def test_batch_sizes_are_checked_however_the_config_is_built() -> None:
    with pytest.raises(ValueError, match=r"engine_batch_sizes must be .*; was 8,1"):
        ServiceConfig(engine_batch_sizes=(8, 1))


def test_the_batching_options_are_declared_once_in_the_batch_policy() -> None:
    settings = {setting.name: setting for setting in dataclasses.fields(ServiceConfig)}
    for option in dataclasses.fields(BatchPolicy):
        assert settings[option.name].type == option.type
        assert settings[option.name].default == option.default
        assert settings[option.name].metadata == option.metadata
    help_text = " ".join(ServiceConfig.parser().format_help().split())
    assert BatchPolicy.__dataclass_fields__["max_queue_delay_ms"].metadata["help"] in help_text
    config = ServiceConfig(max_batch_size=3, max_queue_delay_ms=0.5, max_batches_in_flight=1)
    assert config.batch_policy == BatchPolicy(3, 0.5, 1)


def test_every_flag_shows_its_variable_and_default_in_the_help() -> None:
    help_text = " ".join(ServiceConfig.parser().format_help().split())
    for setting in dataclasses.fields(ServiceConfig):
        flag, variable = (
            "--" + setting.name.replace("_", "-"),
            "SEGMENTATION_" + setting.name.upper(),
        )
        assert f" {flag} " in help_text
        assert f"(env {variable}; default " in help_text
    assert "--engine {auto,tflite,tensorflow,torch,model-free}" in help_text
    assert "--log-level {DEBUG,INFO,WARNING,ERROR}" in help_text
    assert "(env SEGMENTATION_MAX_QUEUE_DELAY_MS; default 4.0)" in help_text
    assert "(env SEGMENTATION_FETCH_MODELS; default true)" in help_text
    assert "(env SEGMENTATION_AUTH_TOKEN; default empty)" in help_text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-batch-size", "0"], "max_batch_size must be positive; was 0"),
        (["--max-batches-in-flight", "0"], "max_batches_in_flight must be positive; was 0"),
        (["--max-queue-delay-ms", "-1"], "max_queue_delay_ms must not be negative; was -1.0"),
        (["--max-streams", "0"], "--max-streams / SEGMENTATION_MAX_STREAMS: max_streams must be"),
        (["--shutdown-grace-s", "-1"], "shutdown_grace_s must not be negative; was -1.0"),
        (["--models", "nope"], "unknown models ['nope']"),
        (["--default-model", "selfie-landscape", "--models", "selfie-general"], "default_model"),
        (
            ["--max-batch-size", "many"],
            "argument --max-batch-size: expected an integer; was 'many'",
        ),
        (["--max-queue-delay-ms", "soon"], "expected a number; was 'soon'"),
        (["--log-level", "LOUD"], "invalid choice: 'LOUD' (choose from 'DEBUG', 'INFO', 'WARNING'"),
        (["--address", "localhost"], "address must be HOST:PORT; was 'localhost'"),
        (["--metrics-port", "-2"], "metrics_port must be -1..65535; was -2"),
        (["--max-unwritten-answers-per-stream", "3"], "must be more than"),
        (["--tls-cert-file", "cert.pem"], "tls_cert_file and tls_key_file go together"),
    ],
)
def test_bad_values_stop_the_server_with_the_bad_value(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in refusal(argv, {}, capsys)
