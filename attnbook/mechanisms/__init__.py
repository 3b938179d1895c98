"""Attention mechanisms, one module each: the NumPy float64 form (``*_numpy``), the torch form, and
the recurrent ``*_step`` / ``*_prefill`` where the mechanism has one. The registry
(:mod:`attnbook.registry`)
catalogues them; nothing here is imported until it is used."""
