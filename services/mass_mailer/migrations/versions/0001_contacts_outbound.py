"""contacts and transactional outbound messages

Revision ID: mm_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "mm_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mm_contact",
        sa.Column("contact_id", sa.String(100), primary_key=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("first_name", sa.String(500), nullable=True),
        sa.Column("last_name", sa.String(500), nullable=True),
        sa.Column("language", sa.String(35), nullable=True),
        sa.Column("custom_fields", sa.JSON(), nullable=False),
        sa.Column("email_opt_out", sa.Boolean(), nullable=False),
        sa.Column("unsubscribed", sa.Boolean(), nullable=False),
        sa.Column("bounced", sa.Boolean(), nullable=False),
        sa.Column("complained", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mm_contact_email", "mm_contact", ["email"])
    op.create_table(
        "mm_outbound_message",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("correlation_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("recipients", sa.String(20_000), nullable=False),
        sa.Column("subject", sa.String(2_000), nullable=False),
        sa.Column("message_id_header", sa.String(998), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("smtp_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(2_000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_mm_outbound_message_correlation_id", "mm_outbound_message", ["correlation_id"], unique=True
    )


def downgrade() -> None:
    op.drop_table("mm_outbound_message")
    op.drop_table("mm_contact")
