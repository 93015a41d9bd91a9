"""The models this service can serve, with where their files come from and how to feed them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How frames are fitted to the model's input: stretched to it (MediaPipe's selfie models), or
# letterboxed: the longer side fills it, aspect kept, padded bottom and right (DeepLab).
Fit = Literal["stretch", "letterbox"]


@dataclass(frozen=True)
class WheelSource:
    """A file shipped inside a wheel on PyPI: fetched with pip, never installed."""

    requirement: str  # e.g. "mediapipe==0.10.14"
    member: str  # path of the file inside the wheel


@dataclass(frozen=True)
class ModelSpec:
    name: str
    file_name: str
    sha256: str  # empty for a model the user supplies (no registered file)
    source: WheelSource | None
    input_height: int
    input_width: int
    # The model takes float RGB: pixel * input_scale + input_offset.
    input_scale: float
    input_offset: float
    licence: str
    description: str
    fit: Fit = "stretch"


_MEDIAPIPE_WHEEL = "mediapipe==0.10.14"
_SELFIE_DIR = "mediapipe/modules/selfie_segmentation"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="selfie-general",
            file_name="selfie_segmentation.tflite",
            sha256="9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
            source=WheelSource(_MEDIAPIPE_WHEEL, f"{_SELFIE_DIR}/selfie_segmentation.tflite"),
            input_height=256,
            input_width=256,
            input_scale=1.0 / 255.0,
            input_offset=0.0,
            licence="Apache-2.0 (MediaPipe Selfie Segmentation)",
            description="MediaPipe Selfie Segmentation, general: 256x256, any aspect ratio",
        ),
        ModelSpec(
            name="selfie-landscape",
            file_name="selfie_segmentation_landscape.tflite",
            sha256="a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
            source=WheelSource(
                _MEDIAPIPE_WHEEL, f"{_SELFIE_DIR}/selfie_segmentation_landscape.tflite"
            ),
            input_height=144,
            input_width=256,
            input_scale=1.0 / 255.0,
            input_offset=0.0,
            licence="Apache-2.0 (MediaPipe Selfie Segmentation)",
            description="MediaPipe Selfie Segmentation, landscape: 144x256, for 16:9 video",
        ),
    )
}


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {sorted(MODELS)}") from None
