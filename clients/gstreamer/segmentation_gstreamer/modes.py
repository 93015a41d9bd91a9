"""What each output mode produces from each input format: the element's caps in one table."""

from __future__ import annotations

# Raw video the element takes. YUV frames go to libjpeg-turbo as planes (no colour conversion).
INPUT_FORMATS = ("RGB", "BGR", "RGBA", "BGRA", "RGBx", "BGRx", "I420", "NV12")

ALPHA, MASK = "alpha", "mask"
COMPOSITES = ("blur", "color", "image")  # the service composites the frame
MODES = (ALPHA, MASK, *COMPOSITES)

# Alpha mode: the frame with the mask as its alpha channel. YUV frames keep their planes and
# gain an alpha plane (A420), which compositor takes as it takes RGBA.
_WITH_ALPHA = {
    "RGB": "RGBA", "RGBA": "RGBA", "RGBx": "RGBA",
    "BGR": "BGRA", "BGRA": "BGRA", "BGRx": "BGRA",
    "I420": "A420", "NV12": "A420",
}  # fmt: skip

OUTPUT_FORMATS = tuple(sorted({*_WITH_ALPHA.values(), "GRAY8", *INPUT_FORMATS}))


def output_format(mode: str, input_format: str) -> str:
    if mode == ALPHA:
        return _WITH_ALPHA[input_format]
    if mode == MASK:
        return "GRAY8"
    return input_format  # a composite comes back in the frame's own format


def input_formats(mode: str, output: str) -> list[str]:
    """The input formats that give `output` in `mode`."""
    return [f for f in INPUT_FORMATS if output_format(mode, f) == output]
