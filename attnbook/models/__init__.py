"""Models built from the mechanisms: the GPT, the KV-cache decoder, mixture of experts, gradient
checkpointing, the book's one training loop (:func:`attnbook.models.train.train`), and chapter 10's
serving code: latent attention (``mla``), the paged cache (``paged``), sinks (``streaming``) and
speculative decoding (``speculative``)."""
