"""requester directory

Revision ID: ms_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "ms_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ms_requester",
        sa.Column("contact_id", sa.String(100), primary_key=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("name", sa.String(1_001), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ms_requester_email", "ms_requester", ["email"])


def downgrade() -> None:
    op.drop_table("ms_requester")
