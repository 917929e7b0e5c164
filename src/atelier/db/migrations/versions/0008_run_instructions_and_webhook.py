"""a run's own instructions (the Responses API's) and its own webhook (the LangGraph API's)

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("instructions", sa.Text(), nullable=True))
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("run_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_webhooks_run_id_runs"), "runs", ["run_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index(batch.f("ix_webhooks_run_id"), ["run_id"])


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_index(batch.f("ix_webhooks_run_id"))
        batch.drop_constraint(batch.f("fk_webhooks_run_id_runs"), type_="foreignkey")
        batch.drop_column("run_id")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("instructions")
