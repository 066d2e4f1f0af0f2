"""Persistence: SQLAlchemy models, migrations, the write path and the read path."""
