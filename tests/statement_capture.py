"""What the SQL adapter sends to its database, statement by statement, with parameters.

The adapter talks to PostgreSQL two ways: through SQLAlchemy (units of work, reads) and,
on its one-call charging path, on psycopg's connection directly. So the capture sits at
the driver: psycopg's cursor `execute`/`executemany`, the implicit BEGIN psycopg sends
before a transaction's first statement, `commit` and `rollback` with a transaction open.
On SQLite, the adapter's every statement (its own BEGIN IMMEDIATE included) goes through
SQLAlchemy's `before_cursor_execute`, and a commit through its `commit` event.

A capture is a list of `Sent(kind, statement, parameters)`; `round_trips` counts them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import psycopg
from psycopg import pq
from sqlalchemy import event
from sqlalchemy.engine import Engine


@attrs.frozen
class Sent:
    kind: str  # "execute", "begin", "commit", "rollback"
    statement: str
    parameters: tuple[Any, ...]


def _rows(parameters: Any, many: bool) -> list[Any]:
    if parameters is None:
        return []
    return list(parameters) if many else [parameters]


def flat_values(parameters: Sequence[Any]) -> list[Any]:
    """Every scalar among a statement's parameters (mappings, rows and arrays opened)."""
    found: list[Any] = []
    stack = list(parameters)
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        else:
            found.append(value)
    return found


@contextlib.contextmanager
def captured(engine: Engine) -> Iterator[list[Sent]]:
    """Everything `engine`'s connections send while the block runs (this process)."""
    sent: list[Sent] = []
    if engine.dialect.name == "postgresql":
        with _psycopg_capture(sent):
            yield sent
        return

    def on_execute(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        kind = "begin" if statement.upper().startswith("BEGIN") else "execute"
        sent.append(Sent(kind, statement, tuple(_rows(parameters, many))))

    def on_commit(conn: Any) -> None:
        sent.append(Sent("commit", "COMMIT", ()))

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_commit)


@contextlib.contextmanager
def _psycopg_capture(sent: list[Sent]) -> Iterator[None]:
    cursor_class, connection_class = psycopg.Cursor, psycopg.Connection
    execute, executemany = cursor_class.execute, cursor_class.executemany
    commit, rollback = connection_class.commit, connection_class.rollback

    def begins(cursor: Any) -> None:
        connection = cursor.connection
        idle = connection.pgconn.transaction_status == pq.TransactionStatus.IDLE
        if idle and not connection.autocommit:
            sent.append(Sent("begin", "BEGIN", ()))

    def counted_execute(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        begins(self)
        sent.append(Sent("execute", str(query), tuple(_rows(params, False))))
        return execute(self, query, params, **kwargs)

    def counted_executemany(self: Any, query: Any, params_seq: Any, **kwargs: Any) -> Any:
        rows = list(params_seq)
        begins(self)
        sent.append(Sent("execute", str(query), tuple(rows)))
        return executemany(self, query, rows, **kwargs)

    def counted_commit(self: Any) -> None:
        if self.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            sent.append(Sent("commit", "COMMIT", ()))
        commit(self)

    def counted_rollback(self: Any) -> None:
        if self.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            sent.append(Sent("rollback", "ROLLBACK", ()))
        rollback(self)

    cursor_class.execute = counted_execute  # type: ignore[method-assign]
    cursor_class.executemany = counted_executemany  # type: ignore[method-assign]
    connection_class.commit = counted_commit  # type: ignore[method-assign]
    connection_class.rollback = counted_rollback  # type: ignore[method-assign]
    try:
        yield
    finally:
        cursor_class.execute = execute  # type: ignore[method-assign]
        cursor_class.executemany = executemany  # type: ignore[method-assign]
        connection_class.commit = commit  # type: ignore[method-assign]
        connection_class.rollback = rollback  # type: ignore[method-assign]
