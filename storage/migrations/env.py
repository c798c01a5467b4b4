"""Alembic environment of the results store. `storage.migrate` passes an open connection (already
in a locked transaction); the developer CLI (`alembic -c .../alembic.ini -x url=...`) passes a URL.
Only the store's own `vs_` tables are compared or touched, never Optuna's."""

from __future__ import annotations

from alembic import context

from storage.migrate import VERSION_TABLE
from storage.models import PREFIX, Base


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    return type_ != "table" or (name or "").startswith(PREFIX)


def run(connection: object) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE,
                      include_name=include_name, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    from storage.engine import make_engine

    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database: alembic -c storage/migrations/alembic.ini -x url=URL ...")
    with make_engine(url).connect() as connection:
        run(connection)
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; pass -x url=URL")
main()
