"""mass events and delivery records

Revision ID: et_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "et_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "et_mass_event",
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column("event_number", sa.String(500), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("location", sa.String(500), nullable=True),
        sa.Column("registration_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("registration_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sub_events", sa.JSON(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "et_delivery_record",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_id", sa.String(36), nullable=False, unique=True),
        sa.Column("correlation_id", sa.String(200), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(2_000), nullable=True),
        sa.Column("smtp_code", sa.Integer(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_et_delivery_record_correlation_id", "et_delivery_record", ["correlation_id"])


def downgrade() -> None:
    op.drop_table("et_delivery_record")
    op.drop_table("et_mass_event")
