"""What a finished study means, as pure functions on plain tables and arrays: fidelity statistics
(mean and CI over seeds, rank agreement between budgets, differences within seed noise), expert
similarity (linear CKA), and the factor report (design factors, marginal means, adjusted effects,
importances, interactions, ablation). Its own surface: `search_space` does not import it, so
`vlmsearch check` stays instant."""

from search_space.analysis.factors import ABSENT, PRESENT, design_factors, lr_bins, varying
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
from search_space.analysis.report import MIN_TRIALS, FactorReport, TooFewTrials, factor_report
from search_space.analysis.similarity import (
    NEAR_DUPLICATE,
    NearDuplicate,
    SimilarityMatrix,
    cka_matrix,
    linear_cka,
    near_duplicates,
)

__all__ = ["ABSENT", "MIN_TRIALS", "NEAR_DUPLICATE", "NOISE_ALPHA", "PRESENT", "FactorReport", "MeanCI",
           "NearDuplicate", "NoisePair", "SimilarityMatrix", "TooFewTrials", "cka_matrix", "design_factors",
           "factor_report", "kendall_tau", "linear_cka", "lr_bins", "mean_ci", "near_duplicates",
           "pool_choices", "pool_experts", "spearman_rho", "top_k_agreement", "varying", "within_noise"]
