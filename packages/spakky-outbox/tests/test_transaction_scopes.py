"""`TransactionScopes`: the nesting rules the Redis and MongoDB transactions share."""

import contextvars

import pytest
from spakky.outbox.backend.transaction import TransactionScope, TransactionScopes


def _scopes() -> TransactionScopes[TransactionScope[str]]:
    return TransactionScopes[TransactionScope[str]]("spakky_outbox_test_transaction")


def test_scopes_nested_transaction_expect_outermost_alone_commits_and_ends() -> None:
    """A nested transaction joins; only the outermost one is handed the scope to commit and end."""
    scopes = _scopes()
    assert scopes.join() is False
    scope = TransactionScope("pipeline")
    scopes.open(scope)
    assert scopes.join() is True
    assert scopes.current() is scope
    assert scope.depth == 1
    assert scopes.commit() is None
    assert scopes.dispose() is None
    assert scope.depth == 0
    assert scopes.current() is scope
    assert scopes.commit() is scope
    assert scope.rollback_only is False
    assert scopes.dispose() is scope
    assert scopes.current() is None


def test_scopes_inner_rollback_expect_outer_commit_marked_rollback_only() -> None:
    """An inner rollback leaves the resource alone and dooms the outermost commit."""
    scopes = _scopes()
    scope = TransactionScope("session")
    scopes.open(scope)
    scopes.join()
    assert scopes.rollback() is None
    assert scope.rollback_only is True
    scopes.dispose()
    assert scopes.commit() is scope
    assert scope.rollback_only is True


def test_scopes_outermost_rollback_expect_scope_to_roll_back() -> None:
    """The outermost rollback is handed the scope; it is not merely marked."""
    scopes = _scopes()
    scope = TransactionScope("session")
    scopes.open(scope)
    assert scopes.rollback() is scope
    assert scope.rollback_only is False


def test_scopes_none_open_expect_nothing_to_do() -> None:
    """Commit, rollback and dispose outside any transaction hand out nothing."""
    scopes = _scopes()
    assert scopes.current() is None
    assert scopes.commit() is None
    assert scopes.rollback() is None
    assert scopes.dispose() is None


def test_scopes_other_context_expect_scope_not_visible() -> None:
    """A scope opened in one context is neither seen nor joined from another."""
    scopes = _scopes()
    scope = TransactionScope("pipeline")
    contextvars.copy_context().run(scopes.open, scope)
    assert scopes.current() is None
    assert scopes.join() is False
    assert scope.depth == 0


def test_scopes_dispose_outermost_expect_previous_scope_restored() -> None:
    """Leaving the outermost transaction restores what the context held before it."""
    scopes = _scopes()
    outer = TransactionScope("outer")
    scopes.open(outer)
    inner = TransactionScope("inner")
    scopes.open(inner)
    assert scopes.dispose() is inner
    assert scopes.current() is outer


def test_scopes_required_outside_transaction_expect_backend_error() -> None:
    """Outside a transaction `required` raises the error the backend names; inside it returns the scope."""

    class NoTransactionError(Exception):
        pass

    scopes = _scopes()
    with pytest.raises(NoTransactionError):
        scopes.required(NoTransactionError)
    scope = TransactionScope("pipeline")
    scopes.open(scope)
    assert scopes.required(NoTransactionError) is scope
