"""Alembic migrations of the SQL adapter's schema, shipped inside the package.

They run programmatically through `adapters.sql.upgrade(url)` (or `credits db upgrade`);
no alembic.ini is needed. Each revision is frozen: it never imports the adapter's table
definitions, so that an old revision keeps meaning what it meant when it shipped.
"""
