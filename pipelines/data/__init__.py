"""Datasets: reading files, recognising their format, normalising rows to chat messages, storing them."""
