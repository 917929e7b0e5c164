"""Money is Decimal, six decimal places, serialised as a string (never a float)."""

from decimal import Decimal

QUANTUM = Decimal("0.000001")


def money(value: Decimal | int) -> Decimal:
    return Decimal(value).quantize(QUANTUM)


def money_str(value: Decimal | int) -> str:
    return str(money(value))
