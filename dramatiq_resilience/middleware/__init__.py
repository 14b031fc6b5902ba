"""One module per middleware."""
