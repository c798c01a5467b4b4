"""The first schema: studies, trials, metrics.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON()  # not JSONB, which reorders keys: an expert's order is part of a design
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "vs_studies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("space_yaml", sa.Text(), nullable=False),
        sa.Column("settings", Json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_vs_studies"),
        sa.UniqueConstraint("name", name="uq_vs_studies_name"),
        sa.CheckConstraint("status IN ('running', 'finished', 'interrupted')", name="ck_vs_studies_status"),
    )
    op.create_table(
        "vs_trials",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("point", Json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("failure_reason", sa.String(16), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("infeasible", sa.Boolean(), nullable=False),
        sa.Column("reused_from", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("recorded_by", sa.String(255), nullable=True),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_vs_trials"),
        sa.ForeignKeyConstraint(["study_id"], ["vs_studies.id"], name="fk_vs_trials_study_id",
                                ondelete="CASCADE"),
        sa.UniqueConstraint("study_id", "number", name="uq_vs_trials_study_id_number"),
        sa.CheckConstraint("status IN ('running', 'complete', 'pruned', 'failed')",
                           name="ck_vs_trials_status"),
        sa.CheckConstraint("failure_reason IS NULL OR failure_reason IN ('nan', 'oom', 'invalid', 'error')",
                           name="ck_vs_trials_failure_reason"),
        sa.CheckConstraint("number >= 0", name="ck_vs_trials_number"),
        sa.CheckConstraint("steps >= 0", name="ck_vs_trials_steps"),
    )
    op.create_index("ix_vs_trials_study_id_status", "vs_trials", ["study_id", "status"])
    op.create_index("ix_vs_trials_config_hash", "vs_trials", ["config_hash"])
    op.create_table(
        "vs_metrics",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("trial_id", "name", "final", "step", name="pk_vs_metrics"),
        sa.ForeignKeyConstraint(["trial_id"], ["vs_trials.id"], name="fk_vs_metrics_trial_id",
                                ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("vs_metrics")
    op.drop_table("vs_trials")
    op.drop_table("vs_studies")
