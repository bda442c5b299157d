"""The error tree: every failure a user can see, each with its documented exit code."""

from __future__ import annotations


class EtlError(Exception):
    """Base of every error etl reports to its user; ``exit_code`` is what the process returns."""

    exit_code = 1


class ConfigError(EtlError):
    """Bad options or settings (exit 2)."""

    exit_code = 2


class AuthError(EtlError):
    """No token, or the API refused it (exit 3)."""

    exit_code = 3


class ApiUnavailableError(EtlError):
    """The API could not be reached, or kept failing, after every retry (exit 4)."""

    exit_code = 4


class InvalidResponseError(EtlError):
    """The API answered something that is not a valid, consistent listing (exit 5)."""

    exit_code = 5


class CatalogShiftedError(InvalidResponseError):
    """The catalog moved while we paged: a model on two pages, or totals that disagree."""


class DatabaseError(EtlError):
    """The database is unreachable, behind its migrations, or refused a write (exit 6)."""

    exit_code = 6


class MissingDatabaseError(DatabaseError):
    """A read found no database file where the URL points (it is never created by a read)."""


class LockHeldError(EtlError):
    """Another sync holds the database's run lock (exit 7)."""

    exit_code = 7


class VerifyFailed(EtlError):
    """``etl verify`` found tables that differ from what the observations derive (exit 8)."""

    exit_code = 8


class NotifyError(EtlError):
    """An alert target refused or could not be reached (``etl notify test|retry``; exit 9)."""

    exit_code = 9


class Interrupted(BaseException):
    """SIGTERM arrived: the run rolls back and exits 143. (A BaseException, like
    KeyboardInterrupt, so no ``except Exception`` swallows it.)"""

    exit_code = 143
