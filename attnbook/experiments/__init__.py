"""The chapters' experiments: synthetic tasks, recall, element-wise tasks, scaling laws, the
mechanism
chooser and the character corpus."""
