"""The catalog (positive windows, operator overrides) and the one context function (BUG-008)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from atelier.llm.base import UsageReport
from atelier.llm.catalog import load_catalog
from atelier.llm.context import context_usage
from atelier.llm.models import CatalogModel
from atelier.usage.cost import Prices, cost


class TestContextUsage:
    @pytest.mark.parametrize("window", [None, 0, -5])
    def test_missing_or_non_positive_window_is_unknown(self, window: int | None) -> None:
        usage = context_usage(1000, window)
        assert usage.status == "unknown"
        assert usage.percent is None

    @pytest.mark.parametrize(
        ("tokens", "status", "percent"),
        [
            (0, "ok", 0.0),
            (699, "ok", 69.9),
            (700, "warning", 70.0),
            (900, "critical", 90.0),
            (1000, "critical", 100.0),
            (1001, "exceeded", 100.1),
        ],
    )
    def test_thresholds(self, tokens: int, status: str, percent: float) -> None:
        assert context_usage(tokens, 1000).status == status
        assert context_usage(tokens, 1000).percent == percent


class TestCatalog:
    def test_shipped_catalog_has_offline_and_every_provider(self) -> None:
        providers = {entry.provider for entry in load_catalog(None)}
        assert providers == {"offline", "anthropic", "openai", "bedrock"}

    def test_operator_file_overrides_and_adds(self, tmp_path: Path) -> None:
        override = tmp_path / "models.json"
        override.write_text(
            json.dumps(
                [
                    {
                        "id": "offline",
                        "provider": "offline",
                        "provider_model_id": "offline",
                        "display_name": "Mine",
                        "context_window": 1000,
                        "input_price_per_mtok": "1.5",
                    },
                    {
                        "id": "local-llama",
                        "provider": "openai",
                        "provider_model_id": "llama3",
                        "display_name": "Llama",
                    },
                ]
            )
        )
        entries = {e.id: e for e in load_catalog(override)}
        assert entries["offline"].display_name == "Mine"
        assert entries["offline"].input_price_per_mtok == Decimal("1.5")
        assert entries["local-llama"].context_window is None

    @pytest.mark.parametrize("window", [0, -1])
    def test_non_positive_windows_are_refused(self, tmp_path: Path, window: int) -> None:
        override = tmp_path / "models.json"
        override.write_text(
            json.dumps(
                [
                    {
                        "id": "x",
                        "provider": "openai",
                        "provider_model_id": "x",
                        "display_name": "x",
                        "context_window": window,
                    }
                ]
            )
        )
        with pytest.raises(ValidationError):
            load_catalog(override)

    async def test_the_database_refuses_a_zero_window_too(self, app) -> None:
        async with app.state.resources.sessionmaker() as session:
            session.add(
                CatalogModel(
                    id="zero",
                    provider="openai",
                    provider_model_id="z",
                    display_name="z",
                    context_window=0,
                )
            )
            with pytest.raises(IntegrityError):
                await session.flush()


class TestCost:
    PRICES = Prices(Decimal("3"), Decimal("15"), Decimal("0.30"), Decimal("3.75"), "USD")

    @pytest.mark.parametrize(
        ("usage", "expected"),
        [
            (UsageReport(1_000_000, 0), Decimal("3.000000")),
            (UsageReport(0, 1_000_000), Decimal("15.000000")),
            (UsageReport(1, 1), Decimal("0.000018")),
            (UsageReport(1234, 567, 1000, 2000), Decimal("0.020007")),
            (UsageReport(0, 0), Decimal("0.000000")),
            (UsageReport(None, None), None),
        ],
    )
    def test_exact_decimal_cost_per_million(
        self, usage: UsageReport, expected: Decimal | None
    ) -> None:
        assert cost(usage, self.PRICES) == expected
