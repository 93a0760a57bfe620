"""comments: message_key (indexed SHA-256 of an incoming mail's Message-ID) for threading

Revision ID: ms_0003
Revises: ms_0002
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "ms_0003"
down_revision = "ms_0002"
branch_labels = None
depends_on = None

_CHUNK = 1_000


def _key(message_id: str | None) -> str | None:
    # Frozen copy of services.mail_scanner.threads.message_key (a migration must not change
    # when the code does).
    if not message_id:
        return None
    text = message_id.strip().strip("<>").strip()
    if not text:
        return None
    return hashlib.sha256(f"<{text}>".encode("utf-8", "replace")).hexdigest()


def upgrade() -> None:
    op.add_column("ms_comment", sa.Column("message_key", sa.String(64), nullable=True))
    op.create_index(op.f("ix_ms_comment_message_key"), "ms_comment", ["message_key"], unique=False)
    # Incoming mail stored before this revision threads too.
    comment = sa.table(
        "ms_comment",
        sa.column("id", sa.Integer()),
        sa.column("direction", sa.String(3)),
        sa.column("message_id", sa.String(998)),
        sa.column("message_key", sa.String(64)),
    )
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(
            sa.select(comment.c.id, comment.c.message_id)
            .where(comment.c.id > last, comment.c.direction == "in", comment.c.message_id.is_not(None))
            .order_by(comment.c.id)
            .limit(_CHUNK)
        ).all()
        if not rows:
            break
        last = rows[-1][0]
        updates = [{"row_id": row_id, "key": _key(mid)} for row_id, mid in rows if _key(mid)]
        if updates:
            bind.execute(
                comment.update()
                .where(comment.c.id == sa.bindparam("row_id"))
                .values(message_key=sa.bindparam("key")),
                updates,
            )


def downgrade() -> None:
    op.drop_index(op.f("ix_ms_comment_message_key"), table_name="ms_comment")
    with op.batch_alter_table("ms_comment") as batch:
        batch.drop_column("message_key")
