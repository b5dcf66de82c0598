"""Alembic migrations of aggregator, installed as ``aggregator.migrations``."""
