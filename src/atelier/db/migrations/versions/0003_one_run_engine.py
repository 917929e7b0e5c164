"""one run engine: chats become conversations of kind 'chat', each turn a run; durable
events keep their ids

Revision ID: 0003
Revises: 0002

Every chat becomes a conversation with the same id; each of its exchanges becomes a run
(completed, or failed when the reply was cut short by an error) holding the user's
message and the reply; a chat's usage records point at its conversation.
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import atelier.db.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = atelier.db.base.UTCDateTime(timezone=True)
Money = sa.Numeric(precision=18, scale=6)

conversations = sa.table(
    "conversations",
    sa.column("id", sa.Uuid()),
    sa.column("tenant_id", sa.Uuid()),
    sa.column("user_id", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("title", sa.String()),
    sa.column("model_id", sa.String()),
    sa.column("metadata", sa.JSON()),
    sa.column("active_run_id", sa.Uuid()),
    sa.column("last_message_seq", sa.Integer()),
    sa.column("total_input_tokens", sa.BigInteger()),
    sa.column("total_output_tokens", sa.BigInteger()),
    sa.column("total_cost", Money),
    sa.column("estimated_context_tokens", sa.BigInteger()),
    sa.column("created_at", Time),
    sa.column("updated_at", Time),
)
chats = sa.table(
    "chats",
    *(
        sa.column(c.name, c.type)
        for c in conversations.columns
        if c.name not in ("kind", "active_run_id", "estimated_context_tokens")
    ),
)
messages = sa.table(
    "messages",
    sa.column("id", sa.Uuid()),
    sa.column("conversation_id", sa.Uuid()),
    sa.column("seq", sa.Integer()),
    sa.column("role", sa.String()),
    sa.column("content", sa.Text()),
    sa.column("parts", sa.JSON()),
    sa.column("run_id", sa.Uuid()),
    sa.column("incomplete", sa.Boolean()),
    sa.column("stop_reason", sa.String()),
    sa.column("created_at", Time),
)
chat_messages = sa.table(
    "chat_messages",
    sa.column("id", sa.Uuid()),
    sa.column("chat_id", sa.Uuid()),
    sa.column("seq", sa.Integer()),
    sa.column("role", sa.String()),
    sa.column("content", sa.Text()),
    sa.column("model_id", sa.String()),
    sa.column("incomplete", sa.Boolean()),
    sa.column("stop_reason", sa.String()),
    sa.column("created_at", Time),
)
runs = sa.table(
    "runs",
    sa.column("id", sa.Uuid()),
    sa.column("conversation_id", sa.Uuid()),
    sa.column("tenant_id", sa.Uuid()),
    sa.column("user_id", sa.String()),
    sa.column("status", sa.String()),
    sa.column("model_id", sa.String()),
    sa.column("input", sa.Text()),
    sa.column("input_tokens", sa.BigInteger()),
    sa.column("output_tokens", sa.BigInteger()),
    sa.column("cost", Money),
    sa.column("error_code", sa.String()),
    sa.column("error_message", sa.Text()),
    sa.column("created_at", Time),
    sa.column("started_at", Time),
    sa.column("ended_at", Time),
)
usage_records = sa.table(
    "usage_records",
    sa.column("conversation_id", sa.Uuid()),
    sa.column("chat_id", sa.Uuid()),
)


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=8), nullable=False, server_default="agent")
        )
        batch.create_check_constraint("kind_known", "kind IN ('agent', 'chat')")
        batch.drop_index("ix_conversations_owner_created")
        batch.create_index(
            "ix_conversations_owner_created", ["tenant_id", "user_id", "kind", "created_at", "id"]
        )
    for table in ("messages", "usage_records"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("event_id", sa.BigInteger(), nullable=True))

    bind = op.get_bind()
    for chat in bind.execute(sa.select(chats)).mappings().all():
        bind.execute(
            conversations.insert().values(
                **chat, kind="chat", active_run_id=None, estimated_context_tokens=0
            )
        )
        _turns_to_runs(bind, chat)
    bind.execute(
        usage_records.update()
        .where(usage_records.c.chat_id.is_not(None))
        .values(conversation_id=usage_records.c.chat_id)
    )

    with op.batch_alter_table("usage_records") as batch:
        batch.drop_index("ix_usage_records_chat_id")
        batch.drop_constraint("fk_usage_records_chat_id_chats", type_="foreignkey")
        batch.drop_column("chat_id")
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_index("uq_chat_messages_chat_seq")
    op.drop_table("chat_messages")
    with op.batch_alter_table("chats") as batch:
        batch.drop_index("ix_chats_owner_created")
    op.drop_table("chats")


def _turns_to_runs(bind: sa.Connection, chat: sa.RowMapping) -> None:
    """A chat's messages, each user message and the reply after it as one run."""
    rows = bind.execute(
        sa.select(chat_messages)
        .where(chat_messages.c.chat_id == chat["id"])
        .order_by(chat_messages.c.seq)
    ).mappings()
    asked = None
    for row in rows:
        run_id = None
        if row["role"] == "assistant" and asked is not None:
            run_id = uuid.uuid4()
            failed = row["incomplete"] and row["stop_reason"] != "max_tokens"
            bind.execute(
                runs.insert().values(
                    id=run_id,
                    conversation_id=chat["id"],
                    tenant_id=chat["tenant_id"],
                    user_id=chat["user_id"],
                    status="failed" if failed else "completed",
                    model_id=row["model_id"] or asked["model_id"] or "offline",
                    input=asked["content"],
                    input_tokens=0,
                    output_tokens=0,
                    cost=0,
                    error_code="model_error" if failed else None,
                    error_message="the reply was cut short" if failed else None,
                    created_at=asked["created_at"],
                    started_at=asked["created_at"],
                    ended_at=row["created_at"],
                )
            )
            bind.execute(
                messages.update().where(messages.c.id == asked["id"]).values(run_id=run_id)
            )
        bind.execute(
            messages.insert().values(
                id=row["id"],
                conversation_id=chat["id"],
                seq=row["seq"],
                role=row["role"],
                content=row["content"],
                parts=None,
                run_id=run_id,
                incomplete=row["incomplete"],
                stop_reason=row["stop_reason"],
                created_at=row["created_at"],
            )
        )
        asked = row if row["role"] == "user" else None


def downgrade() -> None:
    op.create_table(
        "chats",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=True),
        sa.Column("model_id", sa.String(length=128), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("last_message_seq", sa.Integer(), nullable=False),
        sa.Column("total_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_cost", Money, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_chats_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_chats"),
    )
    with op.batch_alter_table("chats") as batch:
        batch.create_index("ix_chats_owner_created", ["tenant_id", "user_id", "created_at", "id"])
    op.create_table(
        "chat_messages",
        sa.Column("chat_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("model_id", sa.String(length=128), nullable=True),
        sa.Column("incomplete", sa.Boolean(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("stop_reason", sa.String(length=32), nullable=True),
        sa.CheckConstraint("role IN ('user', 'assistant')", name="ck_chat_messages_role_known"),
        sa.CheckConstraint("seq > 0", name="ck_chat_messages_seq_positive"),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name="fk_chat_messages_chat_id_chats", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
    )
    with op.batch_alter_table("chat_messages") as batch:
        batch.create_index("uq_chat_messages_chat_seq", ["chat_id", "seq"], unique=True)
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("chat_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            "fk_usage_records_chat_id_chats", "chats", ["chat_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_usage_records_chat_id", ["chat_id"])

    bind = op.get_bind()
    is_chat = conversations.c.kind == "chat"
    for chat in bind.execute(sa.select(conversations).where(is_chat)).mappings().all():
        bind.execute(chats.insert().values(**{c.name: chat[c.name] for c in chats.columns}))
        replies = bind.execute(
            sa.select(messages, runs.c.model_id)
            .outerjoin(runs, runs.c.id == messages.c.run_id)
            .where(messages.c.conversation_id == chat["id"], messages.c.role != "tool")
        ).mappings()
        for row in replies:
            bind.execute(
                chat_messages.insert().values(
                    id=row["id"],
                    chat_id=chat["id"],
                    seq=row["seq"],
                    role=row["role"],
                    content=row["content"],
                    model_id=row["model_id"],
                    incomplete=row["incomplete"],
                    stop_reason=row["stop_reason"],
                    created_at=row["created_at"],
                )
            )
        bind.execute(
            usage_records.update()
            .where(usage_records.c.conversation_id == chat["id"])
            .values(chat_id=chat["id"], conversation_id=None)
        )
    bind.execute(conversations.delete().where(is_chat))  # their messages and runs cascade

    for table in ("messages", "usage_records"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("event_id")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index("ix_conversations_owner_created")
        batch.create_index(
            "ix_conversations_owner_created", ["tenant_id", "user_id", "created_at", "id"]
        )
        batch.drop_constraint(op.f("ck_conversations_kind_known"), type_="check")
        batch.drop_column("kind")
