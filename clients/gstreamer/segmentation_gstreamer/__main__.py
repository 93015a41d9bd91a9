"""Prints the folder to put on GST_PLUGIN_PATH."""

from segmentation_gstreamer import PLUGIN_PATH

print(PLUGIN_PATH)
