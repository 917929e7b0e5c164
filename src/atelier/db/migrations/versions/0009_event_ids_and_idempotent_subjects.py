"""each approval request remembers the id of the event that announced it, so that a
follower can send it again from the database when the shared log never got it; a stored
idempotent answer names what it is about (deleted with it) and may be sealed

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("event_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("idempotent_requests") as batch:
        batch.add_column(sa.Column("subject", sa.Uuid(), nullable=True))
        batch.add_column(
            sa.Column("sealed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index("ix_idempotent_requests_subject", ["tenant_id", "subject"])


def downgrade() -> None:
    with op.batch_alter_table("idempotent_requests") as batch:
        batch.drop_index("ix_idempotent_requests_subject")
        batch.drop_column("sealed")
        batch.drop_column("subject")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("event_id")
