"""The search strategies a YAML may name (`search.backend`, `search.sampler`,
`search.early_stopping.kind`): torch-free descriptors with the flags that checks and drivers
read, so no code tests the names themselves. Each backend keeps its own factories under the
same names (trials/search); a contract test holds the two sets equal."""

from __future__ import annotations

from dataclasses import dataclass

from search_space.registry import Registry


@dataclass(frozen=True)
class Backend:
    """Where trials run. `joins_cluster`: `--ray-address` may name a running cluster whose
    nodes run the trials (so this machine need not have their devices)."""

    joins_cluster: bool = False


@dataclass(frozen=True)
class Sampler:
    """How the next design is drawn. `needs_finite_space`: it enumerates every point."""

    needs_finite_space: bool = False


@dataclass(frozen=True)
class EarlyStopping:
    """Whether and how trials stop at rungs (evaluations at growing step counts).
    `single_objective`: the rule ranks trials by the first objective alone; `mo_asha`:
    vlmsearch's multi-objective ASHA decides at each rung, whatever the backend."""

    stops_early: bool = True
    single_objective: bool = False
    mo_asha: bool = False


BACKENDS: Registry[Backend] = Registry("backend")
BACKENDS.register("optuna", Backend(), "Optuna ask/tell over an RDB study; trials in worker processes")
BACKENDS.register("ray", Backend(joins_cluster=True),
                  "Ray Tune with Optuna's sampler; local or a cluster (--ray-address)")

SAMPLERS: Registry[Sampler] = Registry("sampler")
SAMPLERS.register("auto", Sampler(), "by the space: FlatBO (GPs, EHVI) where flat, tpe where conditional")
SAMPLERS.register("tpe", Sampler(), "TPE (multivariate, grouped for conditional parameters)")
SAMPLERS.register("nsga2", Sampler(), "NSGA-II")
SAMPLERS.register("random", Sampler(), "uniform random")
SAMPLERS.register("gp", Sampler(), "Gaussian process")
SAMPLERS.register("grid", Sampler(needs_finite_space=True), "every point of a finite space")

EARLY_STOPPING: Registry[EarlyStopping] = Registry("early stopping")
EARLY_STOPPING.register("none", EarlyStopping(stops_early=False), "train every trial fully")
EARLY_STOPPING.register("asha", EarlyStopping(single_objective=True), "one objective: ASHA")
EARLY_STOPPING.register("hyperband", EarlyStopping(single_objective=True), "one objective: Hyperband")
EARLY_STOPPING.register("mo_asha", EarlyStopping(mo_asha=True),
                        "several objectives: vlmsearch's MO-ASHA (non-dominated sorting at each rung)")
