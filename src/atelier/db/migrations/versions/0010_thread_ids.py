"""a LangGraph thread keeps the id its client chose beside its conversation's own, so that
each user has their own space of thread ids

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("thread_id", sa.Uuid(), nullable=True))
        batch.create_index(
            "ux_conversations_thread", ["tenant_id", "user_id", "thread_id"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index("ux_conversations_thread")
        batch.drop_column("thread_id")
