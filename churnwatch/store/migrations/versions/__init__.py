"""Revisions, oldest first: `0001_…`, `0002_…` (alembic skips this file)."""
