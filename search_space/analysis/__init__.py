"""What a finished study means, as pure functions on plain tables and arrays: fidelity statistics
(mean and CI over seeds, rank agreement between budgets, differences within seed noise), and
(beside them) the factor report and expert similarity. Its own surface: `search_space` does not
import it, so `vlmsearch check` stays instant."""

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

__all__ = ["NOISE_ALPHA", "MeanCI", "NoisePair", "kendall_tau", "mean_ci", "spearman_rho",
           "top_k_agreement", "within_noise"]
