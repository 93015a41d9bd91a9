"""The TensorFlow target's operators: each TFLite operator the selfie models use, re-expressed
with TensorFlow ops that do not care about the batch size. Constants stay numpy arrays until
an op takes them (DEQUANTIZE runs once, as the graph is built); any other operator is an error
that names it (`OperatorTable`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from models.tflite_operators import OperatorContext, OperatorTable
from models.tflite_reader import TRANSPOSE_CONV_BIAS, ConversionError, UnsupportedOperatorError

if TYPE_CHECKING:
    import tensorflow as tf

Value = Any  # a tf.Tensor (depends on the frames) or an np.ndarray (a constant)


def _activation(ctx: OperatorContext, x: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    code = ctx.activation_code((0, 1, 3))
    return {0: lambda: x, 1: lambda: tf.nn.relu(x), 3: lambda: tf.nn.relu6(x)}[code]()


def as_tensor(value: Value) -> tf.Tensor:
    import tensorflow as tf

    return tf.constant(value) if isinstance(value, np.ndarray) else value


def _channels(ctx: OperatorContext, x: tf.Tensor) -> int:
    channels = x.shape[-1]
    if channels is None:
        raise ConversionError(f"{ctx.where}: the input's channel count is unknown")
    return int(channels)


def _with_bias(ctx: OperatorContext, y: tf.Tensor, position: int) -> tf.Tensor:
    import tensorflow as tf

    bias = ctx.optional_input(position)
    if bias is None:
        return y
    if not isinstance(bias, np.ndarray):
        raise ConversionError(f"{ctx.where}: the bias must be a constant")
    return tf.nn.bias_add(y, bias.astype(np.float32))


def _conv_2d(ctx: OperatorContext) -> tf.Tensor:
    import tensorflow as tf

    x, kernel = ctx.input(0), ctx.constant(1)  # kernel: (out, kh, kw, in)
    if kernel.shape[3] != _channels(ctx, x):
        # Grouped convolution: the schema allows it, the selfie models never use it.
        raise UnsupportedOperatorError(f"{ctx.where}: grouped convolution is not supported")
    y = tf.nn.conv2d(
        x,
        np.transpose(kernel, (1, 2, 3, 0)).astype(np.float32),  # -> (kh, kw, in, out)
        strides=[1, ctx.option("strideH", 1), ctx.option("strideW", 1), 1],
        padding=ctx.padding(),
        dilations=[1, ctx.option("dilationHFactor", 1), ctx.option("dilationWFactor", 1), 1],
    )
    return _activation(ctx, _with_bias(ctx, y, 2))


def _depthwise_conv_2d(ctx: OperatorContext) -> tf.Tensor:
    import tensorflow as tf

    x, kernel = ctx.input(0), ctx.constant(1)  # kernel: (1, kh, kw, in * multiplier)
    channels = _channels(ctx, x)
    if kernel.shape[0] != 1 or kernel.shape[3] % channels:
        raise ConversionError(f"{ctx.where}: kernel shape {kernel.shape} for {channels} channels")
    # Output channel c * multiplier + m reads input channel c, in TFLite and in TensorFlow alike;
    # the multiplier comes from the shapes because old files leave depth_multiplier at 0.
    multiplier = kernel.shape[3] // channels
    y = tf.nn.depthwise_conv2d(
        x,
        kernel.reshape(kernel.shape[1], kernel.shape[2], channels, multiplier).astype(np.float32),
        strides=[1, ctx.option("strideH", 1), ctx.option("strideW", 1), 1],
        padding=ctx.padding(),
        dilations=[ctx.option("dilationHFactor", 1), ctx.option("dilationWFactor", 1)],
    )
    return _activation(ctx, _with_bias(ctx, y, 2))


def _transpose_conv_bias(ctx: OperatorContext) -> tf.Tensor:
    """MediaPipe's Convolution2DTransposeBias: TRANSPOSE_CONV with a bias and NHWC input 0."""
    import tensorflow as tf

    padding, stride_h, stride_w = ctx.transpose_conv_options()
    x, kernel = ctx.input(0), ctx.constant(1)  # kernel: (out, kh, kw, in)
    out_channels, kernel_h, kernel_w, in_channels = kernel.shape
    if in_channels != _channels(ctx, x):
        raise ConversionError(f"{ctx.where}: kernel shape {kernel.shape} for input {x.shape}")
    height, width = int(x.shape[1]), int(x.shape[2])
    if padding == "SAME":
        out_h, out_w = height * stride_h, width * stride_w
    else:
        out_h = (height - 1) * stride_h + kernel_h
        out_w = (width - 1) * stride_w + kernel_w
    y = tf.nn.conv2d_transpose(
        x,
        np.transpose(kernel, (1, 2, 0, 3)).astype(np.float32),  # -> (kh, kw, out, in)
        output_shape=tf.stack([tf.shape(x)[0], out_h, out_w, out_channels]),
        strides=[1, stride_h, stride_w, 1],
        padding=padding,
    )
    y = tf.ensure_shape(y, [None, out_h, out_w, out_channels])
    return _with_bias(ctx, y, 2)


def _binary(function: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> Callable[..., Value]:
    def implementation(ctx: OperatorContext) -> tf.Tensor:
        return _activation(ctx, function(as_tensor(ctx.input(0)), as_tensor(ctx.input(1))))

    return implementation


def _add(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.add(a, b)


def _mul(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.multiply(a, b)


def _relu(ctx: OperatorContext) -> tf.Tensor:
    import tensorflow as tf

    return tf.nn.relu(ctx.input(0))


def _hard_swish(ctx: OperatorContext) -> tf.Tensor:
    import tensorflow as tf

    x = ctx.input(0)
    return x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)  # TFLite's definition: x * relu6(x + 3) / 6


def _logistic(ctx: OperatorContext) -> tf.Tensor:
    import tensorflow as tf

    return tf.sigmoid(ctx.input(0))


def _average_pool_2d(ctx: OperatorContext) -> tf.Tensor:
    import tensorflow as tf

    y = tf.nn.avg_pool2d(
        ctx.input(0),
        ksize=[1, ctx.option("filterHeight"), ctx.option("filterWidth"), 1],
        strides=[1, ctx.option("strideH"), ctx.option("strideW"), 1],
        padding=ctx.padding(),  # SAME averages over the valid cells only, like TFLite
    )
    return _activation(ctx, y)


def _mean(ctx: OperatorContext) -> tf.Tensor:
    import tensorflow as tf

    x = ctx.input(0)
    axes = [int(a) % x.shape.rank for a in np.atleast_1d(ctx.constant(1))]
    if 0 in axes:
        # Averaging over the batch would mix frames once the batch is more than one frame.
        raise UnsupportedOperatorError(f"{ctx.where}: a mean over the batch axis is not supported")
    return tf.reduce_mean(x, axis=axes, keepdims=bool(ctx.option("keepDims", False)))


def _resize_bilinear(ctx: OperatorContext) -> tf.Tensor:
    import tensorflow as tf

    size = ctx.constant(1).astype(np.int32)
    return tf.raw_ops.ResizeBilinear(
        images=ctx.input(0),
        size=size,
        align_corners=bool(ctx.option("alignCorners", False)),
        half_pixel_centers=bool(ctx.option("halfPixelCenters", False)),
    )


def _dequantize(ctx: OperatorContext) -> np.ndarray:
    return ctx.dequantized_constant()  # done once here: the graph holds float32 constants


OPERATORS = OperatorTable(
    builtin={
        "ADD": _binary(_add),
        "AVERAGE_POOL_2D": _average_pool_2d,
        "CONV_2D": _conv_2d,
        "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
        "DEQUANTIZE": _dequantize,
        "HARD_SWISH": _hard_swish,
        "LOGISTIC": _logistic,
        "MEAN": _mean,
        "MUL": _binary(_mul),
        "RELU": _relu,
        "RESIZE_BILINEAR": _resize_bilinear,
    },
    custom={TRANSPOSE_CONV_BIAS: _transpose_conv_bias},
)
