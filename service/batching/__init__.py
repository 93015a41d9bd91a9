"""When a batch closes and what is in it (`batcher`), and the loop that runs the closed batches
on a model's engine threads (`runner`). Nothing here knows what a frame or a model is."""
