"""Validation trials: designs of a study re-trained at a larger budget with several seeds
(`vlmsearch validate`), in a table of their own so the search's trials, sampler and front never
see them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Json = sa.JSON()
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "vs_validation_trials",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("design_hash", sa.String(64), nullable=False),
        sa.Column("validates", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("point", Json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_reason", sa.String(16), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("metrics", Json, nullable=True),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("recorded_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_vs_validation_trials"),
        sa.ForeignKeyConstraint(["study_id"], ["vs_studies.id"], name="fk_vs_validation_trials_study_id",
                                ondelete="CASCADE"),
        sa.UniqueConstraint("study_id", "design_hash", "seed", "steps",
                            name="uq_vs_validation_trials_study_id_design_hash_seed_steps"),
        sa.UniqueConstraint("study_id", "number", name="uq_vs_validation_trials_study_id_number"),
        sa.CheckConstraint("status IN ('running', 'complete', 'failed')",
                           name="ck_vs_validation_trials_status"),
        sa.CheckConstraint("failure_reason IS NULL OR failure_reason IN ('nan', 'oom', 'invalid', 'error')",
                           name="ck_vs_validation_trials_failure_reason"),
        sa.CheckConstraint("number >= 0", name="ck_vs_validation_trials_number"),
        sa.CheckConstraint("steps > 0", name="ck_vs_validation_trials_steps"),
    )
    op.create_index("ix_vs_validation_trials_design_hash", "vs_validation_trials", ["design_hash"])


def downgrade() -> None:
    op.drop_index("ix_vs_validation_trials_design_hash", table_name="vs_validation_trials")
    op.drop_table("vs_validation_trials")
