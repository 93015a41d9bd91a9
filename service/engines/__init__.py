"""Running a model on a batch of frames: the engine protocol, one module per engine, and the one
place that builds and picks them (`selection`)."""
