"""Everything that speaks SQL: the engine and migrations, the schema, and the queries, one module per area.

Importing it is cheap on purpose: sqlite_scans.py, under it, is imported by every CGI scan, without SQLAlchemy.
"""
