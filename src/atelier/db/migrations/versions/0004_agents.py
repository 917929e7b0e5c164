"""agents and their immutable versions; conversations name one, runs record the one they ran
and may wait for a person's approval of a tool call

Revision ID: 0004
Revises: 0003

Every existing tenant gets its ``default`` agent (version 1: the built-in workspace agent,
all tools, the server's limits), which is what every run did before.
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import atelier.db.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = atelier.db.base.UTCDateTime(timezone=True)
DEFAULT_DEFINITION: dict[str, object] = {
    "instructions": None,
    "model_id": None,
    "tools": None,
    "mcp_servers": [],
    "approval": {"require": []},
    "limits": {"max_steps": None, "deadline_seconds": None, "max_output_tokens": None},
    "metadata": {},
}


def upgrade() -> None:
    agents = op.create_table(
        "agents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.Column("deleted_at", Time, nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_agents_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
    )
    op.create_index(
        "uq_agents_tenant_name_live",
        "agents",
        ["tenant_id", "name"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
        sqlite_where=sa.text("deleted_at IS NULL"),
    )
    versions = op.create_table(
        "agent_versions",
        sa.Column("agent_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.Text(), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_agent_versions_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", "version", name=op.f("pk_agent_versions")),
    )
    for table in ("conversations", "runs"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("agent_id", sa.Uuid(), nullable=True))
            batch.add_column(sa.Column("agent_version", sa.Integer(), nullable=True))
            batch.create_foreign_key(
                op.f(f"fk_{table}_agent_id_agents"),
                "agents",
                ["agent_id"],
                ["id"],
                ondelete="SET NULL",
            )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("paused_event_id", sa.BigInteger(), nullable=True))
        batch.alter_column("status", existing_type=sa.String(length=16), type_=sa.String(length=32))
        batch.drop_constraint(op.f("ck_runs_status_known"), type_="check")
        batch.create_check_constraint(
            "status_known",
            "status IN ('queued', 'running', 'awaiting_approval', 'completed', 'failed',"
            " 'cancelled', 'timed_out')",
        )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("decided_at", Time, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'denied')", name=op.f("ck_approvals_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_approvals_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    op.create_index("uq_approvals_run_call", "approvals", ["run_id", "call_id"], unique=True)
    op.create_index("ix_approvals_status_expires", "approvals", ["status", "expires_at"])
    now = datetime.now(UTC)
    tenants = op.get_bind().execute(sa.text("SELECT id FROM tenants")).scalars().all()
    rows = [{"id": uuid.uuid4(), "tenant_id": uuid.UUID(str(t))} for t in tenants]
    if rows:
        op.bulk_insert(
            agents,
            [
                {
                    **row,
                    "name": "default",
                    "latest_version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for row in rows
            ],
        )
        op.bulk_insert(
            versions,
            [
                {
                    "agent_id": row["id"],
                    "version": 1,
                    "definition": DEFAULT_DEFINITION,
                    "created_at": now,
                }
                for row in rows
            ],
        )


def downgrade() -> None:
    op.drop_table("approvals")
    op.execute("UPDATE runs SET status = 'cancelled' WHERE status = 'awaiting_approval'")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_status_known"), type_="check")
        batch.create_check_constraint(
            "status_known",
            "status IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'timed_out')",
        )
        batch.alter_column("status", existing_type=sa.String(length=32), type_=sa.String(length=16))
        batch.drop_column("paused_event_id")
    for table in ("runs", "conversations"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"fk_{table}_agent_id_agents"), type_="foreignkey")
            batch.drop_column("agent_version")
            batch.drop_column("agent_id")
    op.drop_table("agent_versions")
    op.drop_index("uq_agents_tenant_name_live", table_name="agents")
    op.drop_table("agents")
