"""The `segmentation` GStreamer element: video in, the service's mask or composite out.

GStreamer finds the element through its Python plugin loader, which reads `python/*.py` under
each folder of GST_PLUGIN_PATH: `GST_PLUGIN_PATH=$(python -m segmentation_gstreamer)`.
"""

from pathlib import Path

PLUGIN_PATH = Path(__file__).parent  # the folder GST_PLUGIN_PATH names
