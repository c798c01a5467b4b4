"""What a finished study means, as pure functions on plain tables and arrays: fidelity statistics
(mean and CI over seeds, rank agreement between budgets, differences within seed noise), expert
similarity (linear CKA), and (beside them) the factor report. Its own surface: `search_space`
does not import it, so `vlmsearch check` stays instant."""

from search_space.analysis.fidelity import (
    NOISE_ALPHA,
    MeanCI,
    NoisePair,
    kendall_tau,
    mean_ci,
    spearman_rho,
    top_k_agreement,
    within_noise,
)
from search_space.analysis.pool import pool_choices, pool_experts
from search_space.analysis.similarity import (
    NEAR_DUPLICATE,
    NearDuplicate,
    SimilarityMatrix,
    cka_matrix,
    linear_cka,
    near_duplicates,
)

__all__ = ["NEAR_DUPLICATE", "NOISE_ALPHA", "MeanCI", "NearDuplicate", "NoisePair", "SimilarityMatrix",
           "cka_matrix", "kendall_tau", "linear_cka", "mean_ci", "near_duplicates", "pool_choices",
           "pool_experts", "spearman_rho", "top_k_agreement", "within_noise"]
