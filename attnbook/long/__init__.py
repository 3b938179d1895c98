"""Long-sequence mechanisms (chapter 4): each has a NumPy reference beside its torch form."""
