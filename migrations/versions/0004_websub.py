"""WebSub hub: pending verifications, subscriptions and pending deliveries.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "websub_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("topic", sa.String(length=2048), nullable=False),
        sa.Column("callback", sa.String(length=2048), nullable=False),
        sa.Column("secret", sa.String(length=255), nullable=True),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("story_id", sa.Integer(), nullable=True),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_websub_requests")),
        sa.UniqueConstraint("key", name=op.f("uq_websub_requests_key")),
    )
    op.create_table(
        "websub_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=2048), nullable=False),
        sa.Column("callback", sa.String(length=2048), nullable=False),
        sa.Column("secret", sa.String(length=255), nullable=True),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("story_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("renewed_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_websub_subscriptions")),
        sa.UniqueConstraint("key", name=op.f("uq_websub_subscriptions_key")),
    )
    with op.batch_alter_table("websub_subscriptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_websub_subscriptions_story_id"), ["story_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_websub_subscriptions_expires_at"), ["expires_at"], unique=False)
    op.create_table(
        "websub_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["websub_subscriptions.id"],
            name=op.f("fk_websub_deliveries_subscription_id_websub_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_websub_deliveries")),
        sa.UniqueConstraint("subscription_id", name=op.f("uq_websub_deliveries_subscription_id")),
    )
    with op.batch_alter_table("websub_deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_websub_deliveries_due_at"), ["due_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("websub_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_websub_deliveries_due_at"))
    op.drop_table("websub_deliveries")
    with op.batch_alter_table("websub_subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_websub_subscriptions_expires_at"))
        batch_op.drop_index(batch_op.f("ix_websub_subscriptions_story_id"))
    op.drop_table("websub_subscriptions")
    op.drop_table("websub_requests")
