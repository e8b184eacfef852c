"""Alembic revisions: the only way the schema is made."""
