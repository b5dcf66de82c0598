"""Feed polling: per-feed interval bounds, a stop reason (410 Gone) and the last
document's polling hints.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("min_interval", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_interval", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("stopped", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("poll_hints", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.drop_column("poll_hints")
        batch_op.drop_column("stopped")
        batch_op.drop_column("max_interval")
        batch_op.drop_column("min_interval")
