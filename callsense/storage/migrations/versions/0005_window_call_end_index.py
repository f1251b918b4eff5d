"""index emotion windows by call and end time (the live wall's newest windows of every call)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 02:00:00
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_window_call_end", "emotion_windows", ["call_id", "end_ms"])


def downgrade() -> None:
    op.drop_index("ix_window_call_end", table_name="emotion_windows")
