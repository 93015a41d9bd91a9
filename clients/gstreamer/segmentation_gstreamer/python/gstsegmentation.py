"""GStreamer's Python plugin loader reads this file (under a GST_PLUGIN_PATH folder's python/)
and registers the `segmentation` element from it."""

from gi.repository import Gst

from segmentation_gstreamer.element import SegmentationFilter

__gstelementfactory__ = ("segmentation", Gst.Rank.NONE, SegmentationFilter)
