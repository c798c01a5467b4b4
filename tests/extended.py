"""The extended tier: tests the default run (the README's test command, CI) leaves out to stay
within CI's time, each because a faster test of the default run checks the same path.
`pytest -m extended` runs them (their durations in the 2026-12-04 full run add up to about 22
CPU-minutes), `pytest -m ""` runs everything.

tests/conftest.py marks each collected test whose node id starts with one of these with
`extended`; one that matches no test fails the collection, so a rename cannot drop a test from
both tiers unnoticed.
"""

from __future__ import annotations

_PAPER_LMS = ["lmsys/vicuna-7b-v1.5-600", "lmsys/vicuna-7b-v1.5-5000",
              "meta-llama/Meta-Llama-3-8B-Instruct-600", "Qwen/Qwen2-7B-Instruct-600"]
_KEPT_PAPER_LM = "lora-lmsys/vicuna-7b-v1.5-600"  # the one paper-scale FLOP case the default run keeps

# node id prefix -> what covers the same path in the default run
EXTENDED: dict[str, str] = {
    # Ray Train and Ray clusters: the launcher's gloo ranks and one Ray search stay in the default run
    "tests/trials/test_distributed.py::test_ray_search_with_two_worker_trials":
        "test_two_gloo_ranks_match_one_process[whole]; test_backend_contract (ray)",
    "tests/trials/test_distributed.py::test_a_failing_ray_train_worker_fails_the_trial":
        "test_a_failing_rank_fails_the_trial_and_nothing_hangs (the same result path)",
    "tests/trials/test_distributed.py::test_cluster_commands_on_loopback": "test_search_ray.py",
    "tests/trials/test_distributed.py::test_optuna_search_with_two_rank_trials":
        "test_two_gloo_ranks_match_one_process[whole]",
    "tests/trials/test_distributed.py::test_two_gloo_ranks_match_one_process[micro_batch_2]":
        "test_two_gloo_ranks_match_one_process[whole]; test_recipe.py's micro-batch tests",
    "tests/trials/test_cache_rss.py": "test_cache.py (the cache's reads, batch by batch)",
    "tests/trials/search/test_search_ray.py::test_ctrl_c_exits_130_and_resume_finishes_each_trial_once":
        "test_search.py::test_ctrl_c_exits_130_and_resume_continues (Optuna backend)",
    "tests/trials/search/test_backend_contract.py::test_kill_9_then_resume_ends_with_as_many_distinct_"
    "designs_as_trials[ray]": "the same test [optuna]",
    "tests/trials/search/test_backend_contract.py::test_dedup_hits_do_not_count_and_a_used_up_space_"
    "stops[ray]": "the same test [optuna]",
    "tests/trials/search/test_backend_contract.py::test_a_grid_stops_at_its_last_point_without_"
    "repeating_one[ray]": "the same test [optuna]",
    "tests/faults/test_trial_faults.py::test_a_killed_ray_worker_is_retried_once_then_the_trial_is_"
    "recorded_failed": "test_raise_oom_and_nan_are_recorded_failed_everywhere_and_the_search_goes_on",
    # kills and outages: the SQLite half (or one kind) stays
    "tests/faults/test_driver_kills.py::test_random_sigkills_then_resume_lose_nothing_and_count_"
    "nothing_twice[postgresql]": "the same test [sqlite]",
    "tests/trials/search/test_search.py::test_kill_9_then_resume_ends_with_exactly_the_requested_trials":
        "test_driver_kills.py [sqlite]; test_backend_contract.py kill_9 [optuna]",
    "tests/dashboard/test_tracking.py::test_the_server_stopped_midway_then_sync_completes_mlflow":
        "test_sink.py's outage test; test_sync_rebuilds_mlflow_from_the_store_without_duplicates",
    "tests/faults/test_database_outage.py::test_postgresql_down_for_seconds_then_back":
        "test_sqlite_locked_by_another_process",
    "tests/storage/test_cli.py::test_a_search_records_into_the_store[postgresql]": "the same test [sqlite]",
    "tests/storage/test_cli.py::test_a_password_is_never_printed[postgresql]": "the same test [sqlite]",
    "tests/storage/test_cli.py::test_results_in_every_format[postgresql]": "the same test [sqlite]",
    "tests/dashboard/test_dashboard.py::test_listening_on_every_interface_answers_other_machines":
        "test_dashboard_serves_the_store_and_prints_the_links",
    # exact counts at paper scale: one case of each kind stays
    **{f"tests/search_space/test_resources_lm.py::test_paper_scale_flops_are_exact[{mode}-{case}]":
       f"[{_KEPT_PAPER_LM}]" for mode in ("frozen", "lora", "full") for case in _PAPER_LMS
       if f"{mode}-{case}" != _KEPT_PAPER_LM},
    **{f"tests/search_space/test_resources_lm.py::test_activation_bytes[mistral-{m}]":
       "test_activation_bytes[mistral-lora-bf16] and the other families"
       for m in ("frozen-fp32", "lora-fp32", "full-fp32", "frozen-bf16")},
    **{f"tests/trials/test_resource_model.py::test_paper_designs_parameters_exact_and_step_flops_as_"
       f"counted[{design}]": "[llava-1.5] and [comm]"
       for design in ("llava-hr", "mousi", "eagle", "mousi-resampler", "mini-gemini", "cambrian")},
    **{f"tests/search_space/test_resources_vision.py::test_activation_bytes[tiny-convnext-{m}]":
       "the other families' activation bytes" for m in ("full-bf16", "lora-bf16")},
    # bad data: one broken set and one intact set stay
    **{f"tests/cli/test_bad_data.py::test_a_broken_llava_set_is_bad_input_for_run_and_trial[{case}]":
       "[missing image]" for case in ("unreadable image", "too few records", "bad json")},
    "tests/cli/test_bad_data.py::test_the_intact_set_passes_the_check_and_trains[missing image]": "[None]",
}


# The longest tests of the default run (CI's durations, 2026-12-04), first in the collection so
# that xdist hands them out first (its groups of several tests still go before single tests).
RUN_FIRST: tuple[str, ...] = (
    "tests/trials/test_planted_optimum.py",
    "tests/faults/test_driver_kills.py",
    "tests/trials/search/test_search.py::test_ctrl_c_exits_130_and_resume_continues",
    "tests/trials/search/test_backend_contract.py::test_multi_objective_with_a_constraint_mo_asha",
    "tests/cli/test_validate.py",
    "tests/cli/test_python_api.py",
    "tests/trials/search/test_search.py::test_two_searches_on_one_study_share_the_work",
    "tests/trials/test_train.py::test_cli_trial_json_and_exit_codes",
    "tests/storage/test_cli.py::test_a_search_records_into_the_store",
    "tests/cli/test_notes.py",
)


def first_rank(nodeid: str) -> int:
    """The position of the first RUN_FIRST prefix `nodeid` starts with; len(RUN_FIRST) if none."""
    return next((i for i, p in enumerate(RUN_FIRST) if nodeid.startswith(p)), len(RUN_FIRST))


def is_extended(nodeid: str) -> bool:
    return any(nodeid.startswith(prefix) for prefix in EXTENDED)


def unmatched(nodeids: list[str]) -> list[str]:
    """The prefixes (EXTENDED's, RUN_FIRST's) no collected test starts with."""
    return [p for p in (*EXTENDED, *RUN_FIRST) if not any(n.startswith(p) for n in nodeids)]
