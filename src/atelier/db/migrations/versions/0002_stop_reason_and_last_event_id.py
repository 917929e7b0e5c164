"""why a model stopped, on messages; a run's final event id

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("messages", "chat_messages"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("stop_reason", sa.String(length=32), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("last_event_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("last_event_id")
    for table in ("messages", "chat_messages"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("stop_reason")
