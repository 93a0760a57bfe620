"""scanner accounts, checkpoints, tickets, comments, rules, error mails, blobs

Revision ID: ms_0002
Revises: ms_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "ms_0002"
down_revision = "ms_0001"
branch_labels = None
depends_on = None

TABLES = (
    "ms_secret", "ms_autoack", "ms_rule", "ms_comment", "ms_ticket", "ms_blob",
    "ms_error_mail", "ms_pending_action", "ms_imported", "ms_checkpoint", "ms_account",
)  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "ms_account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("encryption", sa.String(10), nullable=False),
        sa.Column("verify_tls", sa.Boolean(), nullable=False),
        sa.Column("auth_type", sa.String(10), nullable=False),
        sa.Column("username", sa.String(320), nullable=False),
        sa.Column("password_enc", sa.String(4000), nullable=True),
        sa.Column("oauth_token_url", sa.String(2000), nullable=True),
        sa.Column("oauth_client_id", sa.String(500), nullable=True),
        sa.Column("oauth_client_secret_enc", sa.String(4000), nullable=True),
        sa.Column("oauth_refresh_token_enc", sa.String(8000), nullable=True),
        sa.Column("oauth_scope", sa.String(1000), nullable=True),
        sa.Column("folders", sa.JSON(), nullable=False),
        sa.Column("scan_mode", sa.String(10), nullable=False),
        sa.Column("error_folder", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("last_error", sa.String(2000), nullable=True),
        sa.Column("last_scan_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "ms_autoack",
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("email"),
    )
    op.create_table(
        "ms_blob",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "ms_checkpoint",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("folder", sa.String(200), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "folder", "uidvalidity"),
    )
    op.create_table(
        "ms_comment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("author_email", sa.String(320), nullable=False),
        sa.Column("author_name", sa.String(500), nullable=False),
        sa.Column("message_id", sa.String(998), nullable=True),
        sa.Column("subject", sa.String(2000), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reply_text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("attachments", sa.JSON(), nullable=False),
        sa.Column("cc", sa.JSON(), nullable=False),
        sa.Column("raw_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_ms_comment_ticket_id"), "ms_comment", ["ticket_id"], unique=False)
    op.create_table(
        "ms_error_mail",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("folder", sa.String(200), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("moved_to", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(2000), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(998), nullable=True),
        sa.Column("subject", sa.String(2000), nullable=False),
        sa.Column("raw_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_ms_error_mail_account_id"), "ms_error_mail", ["account_id"], unique=False)
    op.create_table(
        "ms_imported",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(30), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("comment_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "fingerprint", name="uq_ms_imported_fp"),
    )
    op.create_table(
        "ms_pending_action",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("folder", sa.String(200), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("target", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_ms_pending_action_account_id"), "ms_pending_action", ["account_id"], unique=False
    )
    op.create_table(
        "ms_rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("match", sa.String(3), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_ms_rule_account_id"), "ms_rule", ["account_id"], unique=False)
    op.create_table(
        "ms_secret",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("value_enc", sa.String(4000), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "ms_ticket",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(50), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("subject", sa.String(2000), nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("priority", sa.String(50), nullable=True),
        sa.Column("category", sa.String(200), nullable=True),
        sa.Column("assigned_group", sa.String(200), nullable=True),
        sa.Column("requester_email", sa.String(320), nullable=False),
        sa.Column("requester_name", sa.String(500), nullable=False),
        sa.Column("requester_contact_id", sa.String(100), nullable=True),
        sa.Column("cc", sa.JSON(), nullable=False),
        sa.Column("note", sa.String(2000), nullable=True),
        sa.Column("last_message_id", sa.String(998), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("number"),
    )
    op.create_index(op.f("ix_ms_ticket_account_id"), "ms_ticket", ["account_id"], unique=False)
    op.create_index(op.f("ix_ms_ticket_requester_email"), "ms_ticket", ["requester_email"], unique=False)


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)
