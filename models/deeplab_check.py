"""Checks at start-up that a DeepLab graph's network gives each frame of a batch what the
graph's own batch-1 path gives it alone.

Nothing in a frozen graph says whether its network mixes the frames of a batch (a batch norm
in training mode, a reshape to batch 1, an op across the batch): so a few different images,
made here, run through the graph's own path one at a time and through the batched network at
batch 1 and in one batch of several, and the outputs are compared.
"""

from __future__ import annotations

import numpy as np

from models.deeplab import INPUT_SIZE, DeepLabModel
from models.deeplab_batched import BatchedDeepLab

# Person probabilities may differ this much (under 3 of a mask's 255 levels): batch sizes can
# take different kernels, and GPUs round differently from run to run.
ALPHA_TOLERANCE = 0.01
# Class ids may differ at this share of pixels, where two classes tie within the rounding.
LABEL_MISMATCH_TOLERANCE = 0.001
_FILL = 128  # the letterbox's padding (service.codec.LETTERBOX_FILL)


def check_images(count: int = 4, size: int = INPUT_SIZE) -> np.ndarray:
    """`count` different letterboxed uint8 images (count, size, size, 3): landscape and
    portrait frames with a red "person" shape, smooth gradients and blocks, padded with the
    letterbox fill where they do not reach the edge."""
    rng = np.random.default_rng(16)
    rows, columns = np.mgrid[0:size, 0:size] / size
    images = np.full((count, size, size, 3), _FILL, np.uint8)
    for index in range(count):
        height, width = (size, size) if index % 3 == 2 else [(385, size), (size, 300)][index % 3]
        blocks = rng.integers(0, 256, (8, 8, 3), np.uint8)
        image = np.kron(blocks, np.ones((size // 8 + 1, size // 8 + 1, 1), np.uint8))[:size, :size]
        image[..., index % 3] = (255 * (rows + columns) / 2).astype(np.uint8)
        centre_row, centre_column = rng.uniform(0.3, 0.7, 2)
        person = ((rows - centre_row) / 0.3) ** 2 + ((columns - centre_column) / 0.2) ** 2 < 1
        image[person] = (230, 40, 40)
        images[index, :height, :width] = image[:height, :width]
    return images


def compare_batched(own: DeepLabModel, batched: BatchedDeepLab, largest_batch: int) -> str | None:
    """None when the batched network agrees with the graph's own path, else why not."""
    images = check_images()
    expected = [own.outputs(image) for image in images]
    runs = [[index] for index in range(len(images))]  # batch 1
    if largest_batch > 1:
        runs.append([index % len(images) for index in range(largest_batch)])
    for run in runs:
        try:
            labels, alpha = batched.outputs(images[run])
        except Exception as error:  # TensorFlow's errors: the network does not take this batch
            return f"the batched network failed on a batch of {len(run)}: {_reason(error)}"
        for position, index in enumerate(run):
            own_labels, own_alpha = expected[index]
            where = f"image {index} in a batch of {len(run)}"
            difference = float(np.abs(alpha[position] - own_alpha).max())
            if difference > ALPHA_TOLERANCE:
                return (
                    f"{where}: person probabilities differ from the graph's own by up to "
                    f"{difference:.3g} (tolerance {ALPHA_TOLERANCE})"
                )
            mismatched = float(np.mean(labels[position] != own_labels))
            if mismatched > LABEL_MISMATCH_TOLERANCE:
                return (
                    f"{where}: {mismatched:.2%} of the class ids differ from the graph's "
                    f"SemanticPredictions (tolerance {LABEL_MISMATCH_TOLERANCE:.1%})"
                )
    return None


def _reason(error: Exception) -> str:
    """The line of a TensorFlow error that says what went wrong, without its traceback."""
    lines = [
        line
        for line in str(error).splitlines()
        if line.strip() and not line.startswith((" ", "\t", "[["))
    ]
    return lines[-1] if lines else type(error).__name__
