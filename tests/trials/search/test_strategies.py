"""The strategy names a YAML may give (search_space/strategies.py, torch-free, what checks read)
and each backend's factories under the same names: one set, so a name is never accepted by
`check` and unknown to a backend."""

from __future__ import annotations

import pytest

from search_space.strategies import BACKENDS, EARLY_STOPPING, SAMPLERS
from trials.search.backend import IMPLEMENTATIONS, SearchBackend, backend_class
from trials.search.samplers import PRUNERS
from trials.search.samplers import SAMPLERS as SAMPLER_FACTORIES


def test_every_named_strategy_has_its_factories() -> None:
    from trials.search.ray_backend import SCHEDULERS

    assert set(IMPLEMENTATIONS.names()) == set(BACKENDS.names())
    assert set(SAMPLER_FACTORIES.names()) == set(SAMPLERS.names())
    assert set(PRUNERS.names()) == set(EARLY_STOPPING.names()) == set(SCHEDULERS.names())


@pytest.mark.parametrize("name", BACKENDS.names())
def test_every_backend_is_a_search_backend(name: str) -> None:
    assert issubclass(backend_class(name), SearchBackend)


def test_flags_replace_name_tests() -> None:
    assert [n for n in SAMPLERS.names() if SAMPLERS.get(n).needs_finite_space] == ["grid"]
    single = {n for n in EARLY_STOPPING.names() if EARLY_STOPPING.get(n).single_objective}
    assert single == {"asha", "hyperband"}
    assert [n for n in EARLY_STOPPING.names() if not EARLY_STOPPING.get(n).stops_early] == ["none"]
    assert [n for n in BACKENDS.names() if BACKENDS.get(n).joins_cluster] == ["ray"]
