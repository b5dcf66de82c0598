"""The demo feeds, installed with the package as ``aggregator.data`` (see README.md here)."""
