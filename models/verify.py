"""Checks the converted models (the SavedModel, the torch module) against the TFLite
interpreter on real photos of people.

The photos (scikit-image's astronaut, matplotlib's Grace Hopper) are stretched to the model's
input, as the service does with video frames. Batch 8 holds different crops, shifts and flips of
them, so a graph that mixed frames of a batch, or ignored all but the first, would show up.
The reference runs every frame on its own through LiteRT (XNNPACK), the service's engine.

    python -m models.verify [--model-dir DIR] [--target all|tensorflow|torch]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Sequence
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
    target: str = "tensorflow"

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOLERANCE


# Copies of the two photos, for hosts without scikit-image and matplotlib (a GPU host, the GPU
# image, where the torch engine checks float16 on them): Eileen Collins (NASA, public domain)
# re-encoded as JPEG, and matplotlib's Grace Hopper file as it ships (public domain).
_SHIPPED = Path(__file__).parent / "photos"


def _shipped(name: str) -> np.ndarray:
    return np.asarray(Image.open(_SHIPPED / name).convert("RGB"))


def astronaut() -> np.ndarray:
    """Eileen Collins, 512x512 (scikit-image's sample, or its shipped copy)."""
    try:
        from skimage import data
    except ImportError:
        return _shipped("astronaut.jpg")
    return data.astronaut()


def grace_hopper() -> np.ndarray:
    """Grace Hopper's portrait, 512x600 (matplotlib's sample, or its shipped copy)."""
    try:
        from matplotlib import cbook
    except ImportError:
        return _shipped("grace_hopper.jpg")
    with cbook.get_sample_data("grace_hopper.jpg") as file:
        return np.asarray(Image.open(file).convert("RGB"))


def _stretch(rgb: np.ndarray, spec: ModelSpec) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(rgb))
    return np.asarray(image.resize((spec.input_width, spec.input_height), Image.BILINEAR))


def photo_frames(spec: ModelSpec, batch: int) -> np.ndarray:
    """uint8 (batch, H, W, 3): the photos, then crops, shifts and flips of them, stretched."""
    collins, hopper = astronaut(), grace_hopper()
    variants = [
        collins,
        hopper,
        collins[64:448, 96:],  # the person larger, cut at the right
        hopper[:400, 50:450],  # head and shoulders
        np.roll(collins, 128, axis=1),  # panned: the person near the right edge
        hopper[:, ::-1],  # mirrored, as a selfie camera shows it
        collins[:320],  # top of the frame only
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

    from models.tensorflow_target import INPUT_NAME, OUTPUT_NAME, SIGNATURE_KEY

    serve = tf.saved_model.load(str(savedmodel_dir)).signatures[SIGNATURE_KEY]

    def run(chunk: np.ndarray) -> np.ndarray:
        return serve(**{INPUT_NAME: tf.constant(chunk)})[OUTPUT_NAME].numpy()

    return compare(spec, tflite_path, run, "tensorflow", batch_sizes)


def verify_torch(
    spec: ModelSpec,
    tflite_path: Path,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    device: str = "cpu",
) -> list[VerificationResult]:
    """Max abs difference between the torch module (float32) and the interpreter."""
    import torch

    from models.torch_target import build_torch_module

    module = build_torch_module(spec, tflite_path).to(device)

    def run(chunk: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(chunk).to(device)).cpu().numpy()

    return compare(spec, tflite_path, run, "torch", batch_sizes)


def compare(
    spec: ModelSpec,
    tflite_path: Path,
    run: Callable[[np.ndarray], np.ndarray],
    target: str,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> list[VerificationResult]:
    """`run` (uint8 frames -> alpha) against the interpreter, one result per batch size."""
    results = []
    for batch in batch_sizes:
        # At least both photos, in batches of `batch`: batch 1 checks each photo on its own.
        frames = photo_frames(spec, max(batch, 2))
        chunks = [frames[start : start + batch] for start in range(0, len(frames), batch)]
        actual = np.concatenate([run(chunk) for chunk in chunks])
        expected = reference_alpha(spec, tflite_path, frames)
        if actual.shape != expected.shape:
            diff = float("inf")  # a wrong shape fails the check, whatever the values
        else:
            diff = float(np.max(np.abs(actual.astype(np.float64) - expected)))
        results.append(VerificationResult(spec.name, batch, diff, target))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    from models.convert import ConversionError, default_model_dir, ensure_savedmodels
    from models.fetch import ModelFileError, ensure_model_files

    parser = argparse.ArgumentParser(
        prog="python -m models.verify",
        description="Compare the converted models with the TFLite interpreter on photos.",
    )
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument(
        "--target",
        choices=("all", "tensorflow", "torch"),
        default="all",
        help="which conversion to check (all: the SavedModel, and torch where installed)",
    )
    parser.add_argument("--device", default="cpu", help="torch's device, e.g. cuda")
    args = parser.parse_args(argv)
    targets = {"all": ("tensorflow", "torch"), "tensorflow": ("tensorflow",)}.get(
        args.target, ("torch",)
    )
    if args.target == "all" and importlib.util.find_spec("torch") is None:
        print("torch is not installed: checking the SavedModel only", file=sys.stderr)
        targets = ("tensorflow",)
    try:
        results = []
        if "tensorflow" in targets:
            converted = ensure_savedmodels(MODELS.values(), args.model_dir, fetch=True)
            for name, (tflite, savedmodel) in converted.items():
                results += verify(MODELS[name], tflite, savedmodel)
        if "torch" in targets:
            paths = ensure_model_files(MODELS.values(), args.model_dir, fetch=True)
            for name, tflite in paths.items():
                results += verify_torch(MODELS[name], tflite, device=args.device)
    except (ConversionError, ModelFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"{'model':<20} {'target':<10} {'batch':>5} {'max abs diff':>14}  "
        f"result (tolerance {TOLERANCE:g})"
    )
    for result in results:
        verdict = "ok" if result.ok else "MISMATCH"
        print(
            f"{result.model:<20} {result.target:<10} {result.batch:>5} "
            f"{result.max_abs_diff:>14.3e}  {verdict}"
        )
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
