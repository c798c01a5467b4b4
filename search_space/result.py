"""The outcome of one trial and its JSON form (CONTRACT.md: "Trial JSON")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from search_space.legacy import stored_design
from search_space.point import TrialConfig

Status = Literal["complete", "pruned", "failed", "running"]
FailureReason = Literal["nan", "oom", "invalid", "error"]
METRIC_ORDER = ("accuracy", "visual_tokens", "positions_used", "trainable_params", "total_params",
                "latency_ms", "peak_mem_mb", "train_time_s")


@dataclass(frozen=True)
class Failure:
    reason: FailureReason
    message: str
    infeasible: bool = False  # rejected before training: its analytic cost breaks a constraint

    def to_json(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message}


@dataclass
class TrialResult:
    """What a trial measured. `steps` is how many training steps actually ran."""

    config: TrialConfig
    status: Status
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    failure: Failure | None = None
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (step, metrics)
    study: str | None = None
    number: int | None = None
    pareto_rank: int | None = None
    reused_from: int | None = None  # dedup: the trial whose result this one repeats
    host: str | None = None  # where it ran (a Ray node id)

    @property
    def config_hash(self) -> str:
        return self.config.config_hash

    @property
    def infeasible(self) -> bool:
        """Refused before training because its analytic costs break a constraint."""
        return bool(self.failure and self.failure.infeasible)

    def ordered_metrics(self) -> dict[str, float]:
        """Contract metrics first (overall accuracy, then per skill), then any others."""
        skills = sorted(k for k in self.metrics if k.startswith("accuracy/"))
        keys = [k for k in METRIC_ORDER[:1] if k in self.metrics] + skills
        keys += [k for k in METRIC_ORDER[1:] if k in self.metrics]
        keys += [k for k in self.metrics if k not in keys]
        return {k: self.metrics[k] for k in keys}

    def to_json(self) -> dict[str, Any]:
        return {"study": self.study, "number": self.number, "config_hash": self.config_hash,
                "status": self.status,
                "failure": self.failure.to_json() if self.failure else None,
                "steps": self.steps, "config": self.config.canonical(),
                "metrics": self.ordered_metrics(), "pareto_rank": self.pareto_rank,
                "reused_from": self.reused_from, "infeasible": self.infeasible, "host": self.host}


def result_from_json(data: dict[str, Any], name: str) -> TrialResult:
    """Rebuild a result from `TrialResult.to_json()` (the point gets `name`); JSON written
    before `reused_from`, `infeasible` and `host` were part of it reads as none of them."""
    failure = data.get("failure")
    config = TrialConfig.model_validate({"name": name, **stored_design(data["config"])})
    return TrialResult(config, data["status"],
                       int(data["steps"]), dict(data["metrics"]),
                       Failure(failure["reason"], failure["message"], bool(data.get("infeasible")))
                       if failure else None,
                       study=data.get("study"), number=data.get("number"),
                       pareto_rank=data.get("pareto_rank"), reused_from=data.get("reused_from"),
                       host=data.get("host"))
