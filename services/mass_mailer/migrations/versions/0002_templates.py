"""templates and their immutable versions

Revision ID: mm_0002_templates
Revises: mm_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "mm_0002_templates"
down_revision = "mm_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mm_template",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(2_000), nullable=False),
        sa.Column("preheader", sa.String(1_000), nullable=False),
        sa.Column("sender_identity", sa.String(200), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("survey_valid_days", sa.Integer(), nullable=True),
        sa.Column("design", sa.JSON(), nullable=False),
        sa.Column("current_version_id", sa.Integer(), nullable=True),
        sa.Column("version_count", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mm_template_name", "mm_template", ["name"])
    op.create_table(
        "mm_template_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("template_id", sa.Integer(), sa.ForeignKey("mm_template.id"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(2_000), nullable=False),
        sa.Column("preheader", sa.String(1_000), nullable=False),
        sa.Column("sender_identity", sa.String(200), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("survey_valid_days", sa.Integer(), nullable=True),
        sa.Column("design", sa.JSON(), nullable=False),
        sa.Column("mjml", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("template_id", "number", name="uq_mm_template_version_number"),
    )
    op.create_index("ix_mm_template_version_template_id", "mm_template_version", ["template_id"])


def downgrade() -> None:
    op.drop_index("ix_mm_template_version_template_id", "mm_template_version")
    op.drop_table("mm_template_version")
    op.drop_index("ix_mm_template_name", "mm_template")
    op.drop_table("mm_template")
