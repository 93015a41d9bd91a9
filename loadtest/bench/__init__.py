"""The benchmarks: `python -m loadtest.bench` (`make bench`: what a frame costs and what the
service spends on it), the GStreamer element's cost (`element`), a caller that stops reading
(`stall`), and the GPU host's benchmark (`gpu/`)."""
