"""aggregator: a deduplicating news-feed aggregator.

The pipeline, one module a step: fetch -> parse/normalise -> store -> cluster -> publish.
"""

__version__ = "0.1.0"
