"""Persistence: SQLite through SQLAlchemy, content-addressed blobs."""
