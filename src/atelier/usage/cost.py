"""The one cost function (BUG-016): Decimal, prices per 1M tokens, quantized to 6 places."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from atelier.llm.base import UsageReport
from atelier.llm.models import CatalogModel
from atelier.usage.money import QUANTUM

PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Prices:
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal
    cache_write_per_mtok: Decimal
    currency: str

    @classmethod
    def of(cls, model: CatalogModel) -> Prices:
        return cls(
            input_per_mtok=model.input_price_per_mtok,
            output_per_mtok=model.output_price_per_mtok,
            # Unpriced cache tokens cost what input tokens cost.
            cache_read_per_mtok=model.cache_read_price_per_mtok
            if model.cache_read_price_per_mtok is not None
            else model.input_price_per_mtok,
            cache_write_per_mtok=model.cache_write_price_per_mtok
            if model.cache_write_price_per_mtok is not None
            else model.input_price_per_mtok,
            currency=model.currency,
        )


def cost(usage: UsageReport, prices: Prices) -> Decimal | None:
    """What ``usage`` cost; None when the provider reported no token counts (unknown, not 0)."""
    if usage.input_tokens is None and usage.output_tokens is None:
        return None
    total = (
        Decimal(usage.input_tokens or 0) * prices.input_per_mtok
        + Decimal(usage.output_tokens or 0) * prices.output_per_mtok
        + Decimal(usage.cache_read_tokens or 0) * prices.cache_read_per_mtok
        + Decimal(usage.cache_write_tokens or 0) * prices.cache_write_per_mtok
    ) / PER_MILLION
    return total.quantize(QUANTUM, rounding=ROUND_HALF_UP)
