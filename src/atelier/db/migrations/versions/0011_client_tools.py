"""a run may be given tools its caller runs (client tools): it waits in its row for their
results as it waits for approvals, with the status awaiting_tool_result; a waiting call is
a person's decision (approval) or a client's result (client_tool, with its output)

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = (
    "'queued', 'running', 'awaiting_approval', 'completed', 'failed', 'cancelled', 'timed_out'"
)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("client_tools", sa.JSON(), nullable=True))
        batch.drop_constraint(op.f("ck_runs_status_known"), type_="check")
        batch.create_check_constraint(
            "status_known", f"status IN ({STATUSES}, 'awaiting_tool_result')"
        )
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="approval")
        )
        batch.add_column(sa.Column("output", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("is_error", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_check_constraint("kind_known", "kind IN ('approval', 'client_tool')")


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_constraint(op.f("ck_approvals_kind_known"), type_="check")
        batch.drop_column("is_error")
        batch.drop_column("output")
        batch.drop_column("kind")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_status_known"), type_="check")
        batch.create_check_constraint("status_known", f"status IN ({STATUSES})")
        batch.drop_column("client_tools")
