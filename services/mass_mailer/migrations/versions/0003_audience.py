"""target groups, members, update-target-group tasks

Revision ID: mm_0003_audience
Revises: mm_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "mm_0003_audience"
down_revision = "mm_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mm_target_group",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("group_type", sa.String(20), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mm_target_group_member",
        sa.Column("target_group_id", sa.String(100), primary_key=True),
        sa.Column("contact_id", sa.String(100), primary_key=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mm_group_update_task",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("target_group_id", sa.String(100), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("interval_days", sa.Integer(), nullable=False),
        sa.Column("at_time", sa.String(5), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_result", sa.String(500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mm_group_update_task_target_group_id", "mm_group_update_task", ["target_group_id"])
    op.create_index("ix_mm_group_update_task_next_run_at", "mm_group_update_task", ["next_run_at"])


def downgrade() -> None:
    op.drop_table("mm_group_update_task")
    op.drop_table("mm_target_group_member")
    op.drop_table("mm_target_group")
