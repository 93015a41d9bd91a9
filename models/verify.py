"""Checks a converted SavedModel against the TFLite interpreter on real photos of people.

The photos (scikit-image's astronaut, matplotlib's Grace Hopper) are stretched to the model's
input, as the service does with video frames. Batch 8 holds different crops, shifts and flips of
them, so a graph that mixed frames of a batch, or ignored all but the first, would show up.
The reference runs every frame on its own through LiteRT (XNNPACK), the service's engine.

    python -m models.verify [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.registry import MODELS, ModelSpec

TOLERANCE = 1e-3  # max absolute difference of the probabilities
BATCH_SIZES = (1, 8)


@dataclass(frozen=True)
class VerificationResult:
    model: str
    batch: int
    max_abs_diff: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOLERANCE


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as file:
        return np.asarray(Image.open(file).convert("RGB"))


def _stretch(rgb: np.ndarray, spec: ModelSpec) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(rgb))
    return np.asarray(image.resize((spec.input_width, spec.input_height), Image.BILINEAR))


def photo_frames(spec: ModelSpec, batch: int) -> np.ndarray:
    """uint8 (batch, H, W, 3): the photos, then crops, shifts and flips of them, stretched."""
    astronaut, hopper = _astronaut(), _grace_hopper()
    variants = [
        astronaut,
        hopper,
        astronaut[64:448, 96:],  # the person larger, cut at the right
        hopper[:400, 50:450],  # head and shoulders
        np.roll(astronaut, 128, axis=1),  # panned: the person near the right edge
        hopper[:, ::-1],  # mirrored, as a selfie camera shows it
        astronaut[:320],  # top of the frame only
        np.roll(hopper, -80, axis=0),  # shifted up, wrapping at the bottom
    ]
    return np.stack([_stretch(variants[i % len(variants)], spec) for i in range(batch)])


def reference_alpha(spec: ModelSpec, tflite_path: Path, frames: np.ndarray) -> np.ndarray:
    """float32 (N, H, W): the TFLite interpreter run on each frame, normalised as the engine."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    alphas = []
    for frame in frames:
        pixels = frame[None].astype(np.float32) * np.float32(spec.input_scale)
        if spec.input_offset:
            pixels += np.float32(spec.input_offset)
        interpreter.set_tensor(input_index, pixels)
        interpreter.invoke()
        alphas.append(interpreter.get_tensor(output_index)[0, :, :, 0].copy())
    return np.stack(alphas)


def verify(
    spec: ModelSpec,
    tflite_path: Path,
    savedmodel_dir: Path,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> list[VerificationResult]:
    """Max abs difference between SavedModel and interpreter, one result per batch size."""
    import tensorflow as tf

    from models.convert import INPUT_NAME, OUTPUT_NAME, SIGNATURE_KEY

    serve = tf.saved_model.load(str(savedmodel_dir)).signatures[SIGNATURE_KEY]
    results = []
    for batch in batch_sizes:
        # At least both photos, in batches of `batch`: batch 1 checks each photo on its own.
        frames = photo_frames(spec, max(batch, 2))
        chunks = [
            tf.constant(frames[start : start + batch]) for start in range(0, len(frames), batch)
        ]
        actual = np.concatenate([serve(**{INPUT_NAME: chunk})[OUTPUT_NAME] for chunk in chunks])
        expected = reference_alpha(spec, tflite_path, frames)
        if actual.shape != expected.shape:
            diff = float("inf")  # a wrong shape fails the check, whatever the values
        else:
            diff = float(np.max(np.abs(actual.astype(np.float64) - expected)))
        results.append(VerificationResult(spec.name, batch, diff))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    from models.convert import ConversionError, default_model_dir, ensure_savedmodels
    from models.fetch import ModelFileError

    parser = argparse.ArgumentParser(
        prog="python -m models.verify",
        description="Compare the converted SavedModels with the TFLite interpreter on photos.",
    )
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    args = parser.parse_args(argv)
    try:
        converted = ensure_savedmodels(MODELS.values(), args.model_dir, fetch=True)
        results = []
        for name, (tflite, savedmodel) in converted.items():
            results += verify(MODELS[name], tflite, savedmodel)
    except (ConversionError, ModelFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{'model':<20} {'batch':>5} {'max abs diff':>14}  result (tolerance {TOLERANCE:g})")
    for result in results:
        verdict = "ok" if result.ok else "MISMATCH"
        print(f"{result.model:<20} {result.batch:>5} {result.max_abs_diff:>14.3e}  {verdict}")
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
