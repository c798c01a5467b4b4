"""Data-parallel trials with real torch.distributed (gloo) ranks on the CPU: as one process at the
same effective batch, failures that name the rank and never hang, and searches on both backends
(Ray: through Ray Train, also on a `ray start` cluster on loopback)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from search_space import TrialConfig
from search_space.events import Sinks
from search_space.space import Resources
from tests.trials.search.search_helpers import make_spec
from tests.trials.test_recipe import point
from trials import train_vlm
from trials.distributed import free_port, train_data_parallel
from trials.outcome import TrialOptions, run_trial
from trials.parallel import Distributed
from trials.search.sinks import MemorySink

SAME = ("accuracy", "visual_tokens", "positions_used", "trainable_params", "total_params")


def trajectory(p: TrialConfig, workers: int, **options: Any) -> tuple[list[float], Any]:
    seen: list[float] = []
    result = run_trial(p, TrialOptions(progress=lambda step, total, loss: seen.append(loss),
                                       resources=Resources(workers=workers), **options))
    assert result.status == "complete", result.failure
    return seen, result


@pytest.mark.slow
@pytest.mark.parametrize("train", [{}, {"micro_batch": 2}], ids=["whole", "micro_batch_2"])
def test_two_gloo_ranks_match_one_process(train: dict[str, Any], tmp_path: Path) -> None:
    """Same effective batch: the same losses and final metrics (and the ranks share one cache)."""
    from trials.cache import FeatureCache

    p = point({**train, "eval_every": 2})
    one, single = trajectory(p, 1)
    reports: list[tuple[int, dict[str, float]]] = []
    two, double = trajectory(p, 2, cache=FeatureCache(tmp_path / "cache"),
                             report=lambda step, metrics: reports.append((step, metrics)) is not None)
    assert len(two) == len(one) == 4
    assert two == pytest.approx(one, rel=1e-4)
    assert {k: double.metrics[k] for k in single.metrics if k.startswith(SAME)} == \
        pytest.approx({k: single.metrics[k] for k in single.metrics if k.startswith(SAME)}, rel=1e-4)
    assert [step for step, _ in reports] == [2, 4]  # rank 0's, relayed: one rung, then the end
    assert reports[0][1]["accuracy"] == pytest.approx(single.history[0][1]["accuracy"])
    assert len(list((tmp_path / "cache").glob("*.features"))) == 4  # 2 experts x 2 splits, shared


def _broken_on_rank_1(p: TrialConfig, options: TrialOptions, ranks: Distributed) -> Any:
    """Rank 1's second step raises inside training (train_vlm turns it into a failed result)."""
    from trials.loop import Loop

    if ranks.rank == 1:
        original = Loop.step

        def step(self: Loop, idx: Any, params: Any, optimizer: Any, number: int) -> float:
            if number == 2:
                raise RuntimeError("rank one broke")
            return original(self, idx, params, optimizer, number)

        Loop.step = step  # type: ignore[method-assign]
    return train_vlm(p, options, ranks)


def _dies_on_rank_1(p: TrialConfig, options: TrialOptions, ranks: Distributed) -> Any:
    if ranks.rank == 1:
        os._exit(3)
    return train_vlm(p, options, ranks)


def _hangs_on_rank_1(p: TrialConfig, options: TrialOptions, ranks: Distributed) -> Any:
    if ranks.rank == 1:
        time.sleep(600)
    return train_vlm(p, options, ranks)


@pytest.mark.slow
@pytest.mark.parametrize(("train", "message"), [
    (_broken_on_rank_1, "rank 1 of 2: RuntimeError: rank one broke"),
    (_dies_on_rank_1, "rank 1 of 2 died (exit code 3)"),
    (_hangs_on_rank_1, "rank 0 of 2: "),  # the collective timeout fails rank 0; rank 1 is stopped
], ids=["raises", "dies", "hangs"])
def test_a_failing_rank_fails_the_trial_and_nothing_hangs(train: Any, message: str) -> None:
    start = time.monotonic()
    options = TrialOptions(resources=Resources(workers=2))
    result = train_data_parallel(point(), options, train=train, timeout_s=5)
    assert result.status == "failed" and result.failure is not None
    assert result.failure.reason == "error"
    assert message in result.failure.message, result.failure.message
    assert time.monotonic() - start < 90


# One objective, visual tokens: the seed points make trial 0 (one expert) the best at the rung,
# so MO-ASHA stops trial 1 (two experts) there, and trial 2 (no better than trial 0) too.
SPACE = """\
name: dp
data: {benchmark: probe, train_size: 48, eval_size: 16, image_size: 64, seed: 0}
experts:
  pool:
    clip: {source: tiny-clip, tokens: 4}
    dinov2: {source: tiny-dinov2, tokens: 4}
  subset: {min: 1, max: 2}
fusion: {kind: sequence_concat}
positions: {choices: [original, share_all]}
train: {steps: 6, batch_size: 8, lr: {low: 1.0e-3, high: 3.0e-3, log: true}}
objectives:
  - {metric: visual_tokens, direction: minimize}
search: {backend: BACKEND, trials: 3, concurrency: 1, seed: 2, resources: RESOURCES,
         seed_points: [{experts: {clip: {source: tiny-clip, tokens: 4}}},
                       {experts: {clip: {source: tiny-clip, tokens: 4},
                                  dinov2: {source: tiny-dinov2, tokens: 4}}}],
         early_stopping: {kind: mo_asha, min_steps: 2, reduction_factor: 3}}
"""


def dp_space(backend: str, resources: str = "{cpu: 1, workers: 2}") -> str:
    return SPACE.replace("BACKEND", backend).replace("RESOURCES", resources)


def assert_all_recorded(state: Any, memory: MemorySink, trials: int) -> None:
    """Trial 0 trained to the end, the others stopped at the rung on rank 0's report."""
    assert sorted(state.results) == list(range(trials))
    statuses = [(state.results[n].status, state.results[n].steps) for n in range(trials)]
    assert statuses == [("complete", 6)] + [("pruned", 2)] * (trials - 1), \
        [r.failure for r in state.results.values()]
    reported = {e[1][0] for e in memory.events if e[0] == "trial_intermediate"}
    assert reported == set(range(trials)), "rank 0's rung report reached the driver"


@pytest.mark.slow
def test_optuna_search_with_two_rank_trials(tmp_path: Path) -> None:
    from trials.search.optuna_backend import OptunaBackend

    memory = MemorySink()
    backend = OptunaBackend(make_spec(tmp_path, dp_space("optuna")), Sinks([memory]))
    backend.prepare()
    state = backend.run()
    assert_all_recorded(state, memory, 3)


@pytest.fixture
def local_ray() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_ray_search_with_two_worker_trials(tmp_path: Path, local_ray: None) -> None:
    """Each trial is a Ray Train TorchTrainer of two gloo workers (half a CPU each); a trial the
    scheduler stops takes its trainer with it (the cluster's CPUs are all free again)."""
    import ray

    from trials.search.ray_backend import RayBackend

    memory = MemorySink()
    backend = RayBackend(make_spec(tmp_path, dp_space("ray").replace("trials: 3", "trials: 2")),
                         Sinks([memory]))
    backend.prepare()
    state = backend.run()
    assert_all_recorded(state, memory, 2)
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == 2


def _one_ray_train_trial(config: dict[str, Any]) -> None:
    """A Tune trial that trains the recipe point on 2 Ray Train workers, `config["train"]` in
    each, and reports how it ended."""
    from ray import tune

    from trials.search.ray_train import train_on_ray

    train = globals()[config["train"]]
    result = train_on_ray(point(), TrialOptions(resources=Resources(cpu=1, workers=2)),
                          Path(config["storage"]), {}, train=train)
    tune.report({"status": result.status, "message": result.failure.message if result.failure else ""})


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
@pytest.mark.parametrize(("train", "message"), [
    ("_dies_on_rank_1", "rank 1 of 2 died ("),
], ids=["dies"])  # a rank that raises: the same result path, tested on the launcher above
def test_a_failing_ray_train_worker_fails_the_trial(train: str, message: str, tmp_path: Path,
                                                    local_ray: None) -> None:
    """The Ray Train path names the rank too, and gives the trial's CPUs back."""
    import ray
    from ray import tune

    trainable = tune.with_resources(_one_ray_train_trial, {"cpu": 0, "memory": 1})
    results = tune.Tuner(trainable, param_space={"train": train, "storage": str(tmp_path)},
                         run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    assert results[0].metrics["status"] == "failed"
    assert message in results[0].metrics["message"], results[0].metrics["message"]
    assert ray.available_resources().get("CPU", 0) == 2


def cluster_env() -> dict[str, str]:
    """Every process of the test cluster, and the search joining it, shares one Ray auth token
    (Ray's default for `ray start` clusters; README: copy `~/.ray/auth_token`)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


@pytest.fixture
def cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A head and a worker node started with `ray start` on loopback (one CPU each); each
    `ray start --block` is ended by its own pid, which stops the Ray processes it started."""
    port, env = free_port(), cluster_env()
    temp = tempfile.mkdtemp(prefix="vsray", dir="/tmp")  # short: Ray's socket paths must fit
    ray_cli = str(Path(sys.executable).with_name("ray"))
    common = ["--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1", "--block"]
    head = [ray_cli, "start", "--head", f"--port={port}", "--include-dashboard=false",
            f"--temp-dir={temp}", *common]
    worker = [ray_cli, "start", f"--address=127.0.0.1:{port}", *common]
    nodes = [subprocess.Popen(head, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    try:
        _wait_for_nodes(f"127.0.0.1:{port}", 1, nodes, env)
        nodes.append(subprocess.Popen(worker, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        _wait_for_nodes(f"127.0.0.1:{port}", 2, nodes, env)
        yield f"127.0.0.1:{port}", env
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=90)
            except subprocess.TimeoutExpired:
                node.kill()
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_nodes(address: str, count: int, nodes: list[subprocess.Popen[bytes]],
                    env: dict[str, str]) -> None:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
             "print(sum(n['Alive'] for n in ray.nodes()))")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for node in nodes:
            assert node.poll() is None, node.stderr.read().decode() if node.stderr else ""
        try:
            out = subprocess.run([sys.executable, "-c", probe, address], capture_output=True,
                                 text=True, env=env, timeout=60)
        except subprocess.TimeoutExpired:
            continue
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    raise AssertionError(f"{count} Ray node(s) at {address} did not come up")


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database on the tests' PostgreSQL server, as on a cluster; SQLite without one."""
    from storage.testing import create_database, drop_database

    try:
        server = request.getfixturevalue("postgres_server")
    except pytest.skip.Exception:
        yield f"sqlite:///{tmp_path}/results.db"
        return
    name = f"vs_cluster_{secrets.token_hex(6)}"
    yield create_database(server, name)
    drop_database(server, name)


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_cluster_commands_on_loopback(tmp_path: Path, cluster: tuple[str, dict[str, str]],
                                      store: str) -> None:
    """The README's cluster commands: `ray start` head and worker, then `vlmsearch run --backend
    ray --ray-address`, with a SQL store and an MLflow tracking store. Two one-CPU trials at once
    on two one-CPU nodes: one runs on each (data-parallel trials are the test above)."""
    from storage import ResultsStore

    address, env = cluster
    space = dp_space("ray", "{cpu: 1}").replace("trials: 3, concurrency: 1", "trials: 2, concurrency: 2")
    space = space.replace("{kind: mo_asha, min_steps: 2, reduction_factor: 3}", "{kind: none}")
    (tmp_path / "space.yaml").write_text(space)
    storage, tracking = store, f"sqlite:///{tmp_path}/mlflow.db"
    run = subprocess.run([sys.executable, "-m", "vlmsearch", "run", "space.yaml", "--backend", "ray",
                          "--ray-address", address, "--storage", storage, "--tracking", tracking],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    with ResultsStore(storage, create=False) as store:
        stored = store.trials("dp")
    assert [(t.status, t.steps) for t in stored] == [("complete", 6), ("complete", 6)], stored
    assert len({t.host for t in stored}) == 2, "one trial on each node"
    from tests.dashboard.mlflow_view import logged

    assert len(logged(tracking, "dp").children) == 2
