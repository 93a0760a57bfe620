"""mailings, deliveries, persisted send rates

Revision ID: mm_0004_mailings
Revises: mm_0003_audience
"""

import sqlalchemy as sa
from alembic import op

revision = "mm_0004_mailings"
down_revision = "mm_0003_audience"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mm_mailing",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("target_group_id", sa.String(100), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("template_version_id", sa.Integer(), nullable=True),
        sa.Column("sender_identity", sa.String(200), nullable=True),
        sa.Column("survey_url", sa.String(2_000), nullable=True),
        sa.Column("calendar_url", sa.String(2_000), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("frozen", sa.Boolean(), nullable=False),
        sa.Column("freeze_cursor", sa.String(100), nullable=True),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("requeue_cursor", sa.Integer(), nullable=True),
        sa.Column("plan_owner", sa.String(64), nullable=True),
        sa.Column("plan_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mm_mailing_status", "mm_mailing", ["status"])
    op.create_index("ix_mm_mailing_scheduled_at", "mm_mailing", ["scheduled_at"])
    op.create_table(
        "mm_delivery",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("mailing_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.String(100), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_reply", sa.String(1_000), nullable=True),
        sa.Column("message_id_header", sa.String(998), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("mailing_id", "contact_id", name="uq_mm_delivery_mailing_contact"),
    )
    op.create_index("ix_mm_delivery_mailing_status", "mm_delivery", ["mailing_id", "status"])
    op.create_table(
        "mm_rate_state",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("rate_per_s", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mm_rate_state")
    op.drop_table("mm_delivery")
    op.drop_table("mm_mailing")
