"""The selfie model run directly with LiteRT on a photo's pixels: what the service must match."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from models.registry import ModelSpec


def reference_mask(jpeg: bytes, spec: ModelSpec, model_path: Path) -> np.ndarray:
    """Boolean person mask at the photo's size: the ideal path, with no shortcut.

    A full-resolution decode (Pillow's own libjpeg), stretched to the model input by Pillow's
    antialiased bilinear filter, the model, a bilinear upscale. The service decodes at a DCT
    scale and resizes with OpenCV: its masks must agree with these.
    """
    image = Image.open(io.BytesIO(jpeg))
    size = image.size
    resized = image.convert("RGB").resize((spec.input_width, spec.input_height), Image.BILINEAR)
    pixels = np.asarray(resized, np.float32)[None] * spec.input_scale + spec.input_offset
    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels)
    interpreter.invoke()
    alpha = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0, :, :, 0]
    upscaled = np.asarray(Image.fromarray(alpha.astype(np.float32), "F").resize(size))
    return upscaled >= 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
