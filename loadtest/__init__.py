"""Load tests and benchmarks of the segmentation service."""
