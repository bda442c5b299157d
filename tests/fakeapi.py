"""The fake DigitalOcean API, for tests and benchmarks: it lives in :mod:`etl.fakeapi` (so that
``etl demo`` has it in an installed etl); ``python -m tests.fakeapi`` still serves it."""

from __future__ import annotations

import sys

from etl.fakeapi import DEFAULT_TOKEN, MODELS_PATH, FakeApi, Fault, RecordedRequest, main

__all__ = ["DEFAULT_TOKEN", "MODELS_PATH", "FakeApi", "Fault", "RecordedRequest", "main"]

if __name__ == "__main__":
    sys.exit(main())
