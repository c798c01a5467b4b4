"""What a finished study means, as pure functions on plain tables and arrays: expert similarity
(linear CKA), and (beside it) fidelity statistics and the factor report. Its own surface:
`search_space` does not import it, so `vlmsearch check` stays instant."""

from search_space.analysis.pool import pool_choices, pool_experts
from search_space.analysis.similarity import (
    NEAR_DUPLICATE,
    NearDuplicate,
    SimilarityMatrix,
    cka_matrix,
    linear_cka,
    near_duplicates,
)

__all__ = ["NEAR_DUPLICATE", "NearDuplicate", "SimilarityMatrix", "cka_matrix", "linear_cka",
           "near_duplicates", "pool_choices", "pool_experts"]
