"""Schema drift: an entity's table missing columns for fields added since it was made.

``schema="add"`` (the default) adds each missing column, nullable (existing rows then read the
field's default), and logs it; ``schema="check"`` refuses to serve the entity (``503``) naming the
columns and the Alembic command. Nothing is ever dropped or altered.
"""

from __future__ import annotations

from sqlalchemy import Table, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateColumn

from starmodel_asgi.errors import EventError
from starmodel_asgi.logs import STORES, get_logger
from starmodel_asgi.settings import SchemaMode
from starmodel_asgi.spec import EntitySpec

logger = get_logger(STORES)


class SchemaDrift(EventError):
    """``schema="check"`` and a table missing columns: ``503`` naming them and the fix."""


def _existing(conn: Connection, table: str) -> set[str]:
    return {column["name"] for column in inspect(conn).get_columns(table)}


async def reconcile(conn: AsyncConnection, table: Table, spec: EntitySpec, mode: SchemaMode, told: set[str]) -> None:
    """Makes ``table`` in the database have every column of ``table`` as declared (``add``), or
    raises ``SchemaDrift`` naming the missing ones (``check``). Runs inside the caller's
    transaction, after ``CREATE TABLE IF NOT EXISTS``, under the store's DDL lock. A refusal is
    logged once per table (``told``), answered on every request until the table is migrated."""
    existing = await conn.run_sync(_existing, table.name)
    missing = [column for column in table.columns if column.name not in existing]
    if not missing:
        return
    names = ", ".join(column.name for column in missing)
    who = spec.entity.__name__
    if mode == "check":
        message = (
            f'{who}: the table {table.name} has no column {names} (schema="check"). Migrate it: '
            f'alembic revision --autogenerate -m "{spec.name}: add {names}" && alembic upgrade head '
            f'(or StarModel(schema="add") adds missing columns itself)'
        )
        if table.name not in told:
            told.add(table.name)
            logger.error("%s", message)
        raise SchemaDrift(503, message, spec.name)
    preparer = conn.dialect.identifier_preparer
    for column in missing:  # every field's column is nullable: existing rows read the default
        ddl = CreateColumn(column).compile(dialect=conn.dialect)
        await conn.exec_driver_sql(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {ddl}")
        logger.warning(
            "%s: added column %s (%s, nullable) to %s; existing rows read the field's default",
            who,
            column.name,
            column.type,
            table.name,
        )
