"""The stubs of segmentation.v1, generated from proto/segmentation/v1 when the client builds."""
