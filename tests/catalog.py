"""Realistic, deterministic models for the fake API: they live in :mod:`etl.fakecatalog` (so
that ``etl demo`` has them in an installed etl)."""

from __future__ import annotations

from etl.fakecatalog import (
    PROVIDERS,
    USECASES,
    evolve,
    is_public,
    make_catalog,
    make_model,
    model_uuid,
    usecases_for,
)

__all__ = ["PROVIDERS", "USECASES", "evolve", "is_public", "make_catalog", "make_model",
           "model_uuid", "usecases_for"]  # fmt: skip
