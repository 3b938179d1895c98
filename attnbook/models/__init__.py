"""Models built from the mechanisms: the GPT, the KV-cache decoder, mixture of experts, gradient
checkpointing, and the book's one training loop (:func:`attnbook.models.train.train`)."""
