"""Per-call state: one video stream's frames from admission to their answers in frame order,
the admission scheduler that shares the room for frames in flight across streams, and the
registry of open streams."""
