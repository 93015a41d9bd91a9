"""One config: flags win over SEGMENTATION_* variables, which win over defaults."""

from __future__ import annotations

import pytest

from service.config import ServiceConfig


def test_defaults() -> None:
    config = ServiceConfig.from_args([], environ={})
    assert config.address == "0.0.0.0:50051"
    assert config.metrics_port == 9090
    assert config.default_model == "selfie-general"
    assert config.batch_policy.max_queue_delay_ms == pytest.approx(4.0)


def test_environment_fills_in_and_flags_win() -> None:
    environ = {
        "SEGMENTATION_MAX_QUEUE_DELAY_MS": "7.5",
        "SEGMENTATION_MAX_BATCH_SIZE": "4",
        "SEGMENTATION_MODELS": "selfie-landscape",
        "SEGMENTATION_DEFAULT_MODEL": "selfie-landscape",
        "SEGMENTATION_FETCH_MODELS": "false",
    }
    config = ServiceConfig.from_args(
        ["--max-batch-size", "12", "--fetch-models-only"], environ=environ
    )
    assert config.fetch_models_only is True
    assert config.max_queue_delay_ms == 7.5
    assert config.max_batch_size == 12
    assert config.models == ("selfie-landscape",)
    assert config.fetch_models is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-batch-size", "0"], "max_batch_size must be positive; was 0"),
        (["--max-queue-delay-ms", "-1"], "max_queue_delay_ms must not be negative; was -1.0"),
        (["--models", "nope"], "unknown models ['nope']"),
        (["--default-model", "selfie-landscape", "--models", "selfie-general"], "default_model"),
        (["--fetch-models", "maybe"], "expected true or false; was 'maybe'"),
        (["--max-batch-size", "many"], "invalid literal"),
        (["--log-level", "LOUD"], "log_level must be one of DEBUG, INFO, WARNING, ERROR"),
        (["--address", "localhost"], "address must be HOST:PORT; was 'localhost'"),
        (["--metrics-port", "-2"], "metrics_port must be -1..65535; was -2"),
    ],
)
def test_bad_values_stop_the_server_with_the_bad_value(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        ServiceConfig.from_args(argv, environ={})
    assert message in capsys.readouterr().err
