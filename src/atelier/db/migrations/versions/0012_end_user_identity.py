"""end users authenticate themselves: revocations of the tokens Atelier mints for them,
a tenant's own identity provider (its JWTs name the user), and the origins a tenant's
frontends run on (CORS)

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import atelier.db.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tenant_key(table: str, *others: str) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f(f"fk_{table}_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", *others, name=op.f(f"pk_{table}")),
    ]


def upgrade() -> None:
    op.create_table(
        "user_token_revocations",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("revoked_at", atelier.db.base.UTCDateTime(timezone=True), nullable=False),
        *_tenant_key("user_token_revocations", "user_id"),
    )
    op.create_table(
        "identity_providers",
        sa.Column("issuer", sa.String(length=512), nullable=False),
        sa.Column("audience", sa.String(length=512), nullable=False),
        sa.Column("jwks_url", sa.Text(), nullable=True),
        sa.Column("hs256_secret_sealed", sa.Text(), nullable=True),
        sa.Column("user_claim", sa.String(length=100), nullable=False),
        sa.Column("algorithms", sa.JSON(), nullable=False),
        sa.Column("leeway_seconds", sa.Integer(), nullable=False),
        sa.Column("updated_at", atelier.db.base.UTCDateTime(timezone=True), nullable=False),
        *_tenant_key("identity_providers"),
    )
    op.create_index(
        op.f("ix_identity_providers_issuer"), "identity_providers", ["issuer"], unique=False
    )
    op.create_table(
        "cors_origins",
        sa.Column("origin", sa.String(length=255), nullable=False),
        *_tenant_key("cors_origins", "origin"),
    )
    op.create_index(op.f("ix_cors_origins_origin"), "cors_origins", ["origin"], unique=False)


def downgrade() -> None:
    op.drop_table("cors_origins")
    op.drop_table("identity_providers")
    op.drop_table("user_token_revocations")
