"""budgets, their per-period counters and the holds of model calls under way; usage and
runs name their API key, usage its agent and whether its tokens were estimated

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import atelier.db.base

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = atelier.db.base.UTCDateTime(timezone=True)
Price = sa.Numeric(18, 6)


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=True),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("limit_amount", Price, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.CheckConstraint(
            "scope IN ('tenant', 'api_key', 'user', 'agent')", name=op.f("ck_budgets_scope_known")
        ),
        sa.CheckConstraint(
            "period IN ('day', 'month', 'total')", name=op.f("ck_budgets_period_known")
        ),
        sa.CheckConstraint("limit_amount >= 0", name=op.f("ck_budgets_limit_not_negative")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_budgets_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
    )
    op.create_index("ix_budgets_tenant_scope_subject", "budgets", ["tenant_id", "scope", "subject"])
    op.create_table(
        "budget_periods",
        sa.Column("budget_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", Time, nullable=False),
        sa.Column("spent", Price, nullable=False),
        sa.Column("reserved", Price, nullable=False),
        sa.ForeignKeyConstraint(
            ["budget_id"],
            ["budgets.id"],
            name=op.f("fk_budget_periods_budget_id_budgets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("budget_id", "period_start", name=op.f("pk_budget_periods")),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("budget_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", Time, nullable=False),
        sa.Column("amount", Price, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.ForeignKeyConstraint(
            ["budget_id"],
            ["budgets.id"],
            name=op.f("fk_budget_reservations_budget_id_budgets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "budget_id", name=op.f("pk_budget_reservations")),
    )
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("api_key_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("agent_id", sa.Uuid(), nullable=True))
        batch.add_column(
            sa.Column("estimated", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("api_key_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("api_key_id")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("estimated")
        batch.drop_column("agent_id")
        batch.drop_column("api_key_id")
    op.drop_table("budget_reservations")
    op.drop_table("budget_periods")
    op.drop_index("ix_budgets_tenant_scope_subject", table_name="budgets")
    op.drop_table("budgets")
