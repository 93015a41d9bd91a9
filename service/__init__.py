"""The segmentation service: JPEG frames of video calls in, person alpha masks out."""
