"""The stored Pareto front: each trial's rank, the study's hypervolume and how many finished trials
the front covered (so `results --pareto` is a query, and a stale front is recomputed).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("vs_trials", sa.Column("pareto_rank", sa.Integer(), nullable=True))
    op.create_index("ix_vs_trials_study_id_pareto_rank", "vs_trials", ["study_id", "pareto_rank"])
    op.add_column("vs_studies", sa.Column("hypervolume", sa.Float(), nullable=True))
    op.add_column("vs_studies", sa.Column("front_finished", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("vs_studies", "front_finished")  # SQLite >= 3.35 drops unconstrained columns
    op.drop_column("vs_studies", "hypervolume")
    op.drop_index("ix_vs_trials_study_id_pareto_rank", table_name="vs_trials")
    op.drop_column("vs_trials", "pareto_rank")
