"""The models of ``config.toml``'s tables: prices and the taxonomy's entries."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Rates(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Annotated[float, Field(ge=0)]
    cached_input: Annotated[float, Field(ge=0)]
    output: Annotated[float, Field(ge=0)]


class ModelPrice(BaseModel):
    """A model's rates in each lane: real-time calls, and the Batch API (``None``: it does not take the model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    realtime: Rates
    batch: Rates | None = None


class TaxonomyEntry(BaseModel):
    """A cluster of the taxonomy: what it means (for Grok) and the offline analyzer's keywords."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    keywords: list[str] = []
