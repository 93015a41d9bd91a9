"""The load tool (`segmentation-loadtest`): the open-loop generator, the capacity search and its
reports, and the local servers and pipelines it and the benchmarks (`bench/`) start."""
