"""triggers, registrations, scheduled sends, template catalogue, GDPR settings

Revision ID: et_0002
Revises: et_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "et_0002"
down_revision = "et_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("et_mass_event") as batch:
        batch.add_column(sa.Column("sequence", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("gdpr_delete_after_days", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("gdpr_cancelled", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("gdpr_done_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "et_registration",
        sa.Column("registration_id", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("contact_id", sa.String(100), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("contact", sa.JSON(), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("function", sa.String(500), nullable=True),
        sa.Column("sub_event", sa.String(500), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("answered", sa.Boolean(), nullable=False),
        sa.Column("answers_deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_et_registration_event_id", "et_registration", ["event_id"])

    op.create_table(
        "et_trigger",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("sub_event", sa.String(500), nullable=True),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("recipients", sa.String(20), nullable=False),
        sa.Column("functions", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("offset_value", sa.Integer(), nullable=False),
        sa.Column("offset_unit", sa.String(10), nullable=False),
        sa.Column("local_time", sa.String(5), nullable=True),
        sa.Column("certificate_template", sa.Text(), nullable=True),
        sa.Column("sender_identity", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_et_trigger_event_id", "et_trigger", ["event_id"])

    op.create_table(
        "et_send",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("trigger_id", sa.Integer(), nullable=False),
        sa.Column("registration_id", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("correlation_id", sa.String(200), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("trigger_id", "registration_id", name="uq_et_send_trigger_registration"),
    )
    op.create_index("ix_et_send_trigger_id", "et_send", ["trigger_id"])
    op.create_index("ix_et_send_event_id", "et_send", ["event_id"])
    op.create_index("ix_et_send_status_due", "et_send", ["status", "due_at"])

    op.create_table(
        "et_template",
        sa.Column("template_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("subject", sa.String(2_000), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "et_secret",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("et_secret")
    op.drop_table("et_template")
    op.drop_table("et_send")
    op.drop_table("et_trigger")
    op.drop_table("et_registration")
    with op.batch_alter_table("et_mass_event") as batch:
        batch.drop_column("gdpr_done_at")
        batch.drop_column("gdpr_cancelled")
        batch.drop_column("gdpr_delete_after_days")
        batch.drop_column("sequence")
