"""The per-frame work around a batch: decode and resize before it, smoothing, upscaling,
compositing and encoding after it, on the codec threads; and the frame path that joins them to
a model's batches."""
