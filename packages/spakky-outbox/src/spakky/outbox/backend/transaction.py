"""Nesting rules of the context-bound transactions a storage brings for ``@Transactional()``.

The outermost transaction in a context opens one backend resource (a Redis
pipeline, a MongoDB session) and binds it to the context; a transaction opened
inside it joins that scope instead of opening another. Only the outermost one
commits, rolls back or ends the resource; a nested rollback marks the scope
rollback-only, so the outermost commit rolls back instead. `TransactionScopes`
makes these decisions; the storage's transactions do the backend's work.
"""

from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TransactionScope[R]:
    """One open transaction in a context: its backend resource and nesting state."""

    resource: R
    depth: int = 0
    """Nested transactions that joined this one and have not left yet."""
    rollback_only: bool = False
    """Set by a nested rollback: the outermost commit must roll back instead."""
    token: Token[Any] | None = field(default=None, repr=False)
    """Restores the context's previous scope when the outermost transaction leaves."""


class TransactionScopes[S: TransactionScope[Any]]:
    """The transaction scope open in each context, and the rules for nesting into it.

    Each method returns the scope only when the caller is the outermost
    transaction and must act on the resource; for a nested one it updates the
    scope and returns None (``join`` returns whether it joined).
    """

    _current: ContextVar[S | None]

    def __init__(self, name: str) -> None:
        """Keep the scopes in a context variable named ``name`` (create one per module)."""
        self._current = ContextVar(name, default=None)

    def current(self) -> S | None:
        """The scope open in this context, or None outside any transaction."""
        return self._current.get()

    def required(self, error: Callable[[], Exception]) -> S:
        """The scope open in this context; raise ``error()`` outside any transaction."""
        scope = self._current.get()
        if scope is None:
            raise error()
        return scope

    def join(self) -> bool:
        """Join the scope open in this context; False when none is (the caller opens one)."""
        scope = self._current.get()
        if scope is None:
            return False
        scope.depth += 1
        return True

    def open(self, scope: S) -> None:
        """Bind ``scope``, whose resource is ready, to this context as the outermost transaction."""
        scope.token = self._current.set(scope)

    def commit(self) -> S | None:
        """The scope the outermost commit finishes, None for a nested one or none open.

        The caller commits the resource, or rolls it back when the scope is
        `TransactionScope.rollback_only`.
        """
        scope = self._current.get()
        if scope is None or scope.depth > 0:
            return None
        return scope

    def rollback(self) -> S | None:
        """The scope the outermost rollback rolls back; a nested one marks it rollback-only."""
        scope = self._current.get()
        if scope is None:
            return None
        if scope.depth > 0:
            scope.rollback_only = True
            return None
        return scope

    def dispose(self) -> S | None:
        """Leave the scope: a nested transaction steps out; the outermost one unbinds it.

        Returns:
            The unbound scope, whose resource the caller ends; None when nested
            or none open.
        """
        scope = self._current.get()
        if scope is None:
            return None
        if scope.depth > 0:
            scope.depth -= 1
            return None
        if scope.token is not None:
            self._current.reset(scope.token)
        return scope
