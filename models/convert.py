"""Converts the registry's TFLite models to batchable TensorFlow SavedModels (the CLI).

The work is split by job: `models/tflite_reader.py` reads the flatbuffer, each target rebuilds
it (`models/tensorflow_target.py` as a TensorFlow graph, `models/torch_target.py` as a torch
module), `models/savedmodel_cache.py` keeps the converted SavedModels. The names below are
re-exported so that callers keep one import.

    python -m models.convert [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from models.fetch import ModelFileError, default_model_dir
from models.registry import MODELS
from models.savedmodel_cache import (
    CONVERTER_VERSION,
    ensure_savedmodel,
    ensure_savedmodels,
    savedmodel_path,
)
from models.tensorflow_target import (
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE_KEY,
    build_module,
    check_model,
    convert_to_savedmodel,
    supported_operators,
)
from models.tflite_reader import (
    TRANSPOSE_CONV_BIAS,
    ConversionError,
    TFLiteGraph,
    TFLiteOperator,
    TFLiteTensor,
    UnsupportedOperatorError,
    read_tflite,
)

__all__ = [
    "CONVERTER_VERSION",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "SIGNATURE_KEY",
    "TRANSPOSE_CONV_BIAS",
    "ConversionError",
    "TFLiteGraph",
    "TFLiteOperator",
    "TFLiteTensor",
    "UnsupportedOperatorError",
    "build_module",
    "check_model",
    "convert_to_savedmodel",
    "default_model_dir",
    "ensure_savedmodel",
    "ensure_savedmodels",
    "read_tflite",
    "savedmodel_path",
    "supported_operators",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.convert",
        description="Convert the registry's TFLite models to batchable TensorFlow SavedModels.",
    )
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument(
        "--no-fetch",
        action="store_true",
        help="fail on missing model files instead of fetching them from the package registry",
    )
    args = parser.parse_args(argv)
    try:
        converted = ensure_savedmodels(MODELS.values(), args.model_dir, fetch=not args.no_fetch)
        for name, (_tflite, savedmodel) in converted.items():
            print(f"{name}\t{savedmodel}")
    except (ConversionError, ModelFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
