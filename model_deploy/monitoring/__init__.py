"""Data-quality monitoring: compare captured endpoint traffic with the model's training baseline."""
