"""contacts, transactional outbound messages, sender identities, DKIM keys, suppressions

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
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("recipients", sa.String(20_000), nullable=False),
        sa.Column("subject", sa.String(2_000), nullable=False),
        sa.Column("message_id_header", sa.String(998), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("events_pending", sa.Boolean(), nullable=False),
        sa.Column("recipient_status", sa.JSON(), nullable=False),
        sa.Column("smtp_code", sa.Integer(), nullable=True),
        sa.Column("enhanced_code", sa.String(20), nullable=True),
        sa.Column("last_error", sa.String(2_000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_mm_outbound_message_correlation_id", "mm_outbound_message", ["correlation_id"], unique=True
    )
    op.create_index("ix_mm_outbound_message_status", "mm_outbound_message", ["status"])
    op.create_index("ix_mm_outbound_message_next_attempt_at", "mm_outbound_message", ["next_attempt_at"])
    op.create_table(
        "mm_sender_identity",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("reply_to", sa.String(320), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("relay_host", sa.String(255), nullable=False),
        sa.Column("relay_port", sa.Integer(), nullable=False),
        sa.Column("relay_tls", sa.String(10), nullable=False),
        sa.Column("relay_verify_tls", sa.Boolean(), nullable=False),
        sa.Column("relay_auth", sa.String(10), nullable=False),
        sa.Column("relay_username", sa.String(320), nullable=True),
        sa.Column("relay_secret", sa.String(4_000), nullable=True),
        sa.Column("pool_size", sa.Integer(), nullable=False),
        sa.Column("dkim_domain", sa.String(253), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mm_dkim_key",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("selector", sa.String(63), nullable=False),
        sa.Column("algorithm", sa.String(10), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("domain", "selector", name="uq_mm_dkim_key_domain_selector"),
    )
    op.create_index("ix_mm_dkim_key_domain", "mm_dkim_key", ["domain"])
    op.create_table(
        "mm_suppression",
        sa.Column("email", sa.String(320), primary_key=True),
        sa.Column("reason", sa.String(20), nullable=False),
        sa.Column("detail", sa.String(2_000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mm_suppression")
    op.drop_table("mm_dkim_key")
    op.drop_table("mm_sender_identity")
    op.drop_table("mm_outbound_message")
    op.drop_table("mm_contact")
