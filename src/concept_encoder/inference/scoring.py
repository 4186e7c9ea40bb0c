"""Concept-level scoring beside the pooled cosine: late interaction over concepts (ColBERT's MaxSim).

For a text a with concepts a_1..a_C and a text b with b_1..b_C (each L2-normalised):

    maxsim(a -> b) = 1/C · Σ_i max_j cos(a_i, b_j)      (each of a's concepts finds its best match in b)
    symmetric(a, b) = (maxsim(a -> b) + maxsim(b -> a)) / 2

Pooled cosine compares the means of the concepts; late interaction lets a concept that reads one part of a
text match the concept of the other text that reads the same thing, wherever it sits in the set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def late_interaction(a: torch.Tensor, b: torch.Tensor, symmetric: bool = True) -> torch.Tensor:
    """Pairwise scores of rows: a [n, C, H], b [n, C', H] -> [n] (concepts are normalised here)."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    cos = torch.einsum("nch,nkh->nck", a, b)  # [n, C, C']
    forward = cos.amax(dim=2).mean(dim=1)
    return (forward + cos.amax(dim=1).mean(dim=1)) / 2 if symmetric else forward


def late_interaction_matrix(queries: torch.Tensor, documents: torch.Tensor, symmetric: bool = True,
                            chunk: int = 16) -> torch.Tensor:
    """Every query against every document: [Q, C, H] x [D, C', H] -> [Q, D], in chunks of queries so that the
    [chunk, D, C, C'] cosines stay small."""
    queries, documents = F.normalize(queries.float(), dim=-1), F.normalize(documents.float(), dim=-1)
    rows = []
    for start in range(0, len(queries), chunk):
        cos = torch.einsum("qch,dkh->qdck", queries[start : start + chunk], documents)  # [q, D, C, C']
        forward = cos.amax(dim=3).mean(dim=2)
        rows.append((forward + cos.amax(dim=2).mean(dim=2)) / 2 if symmetric else forward)
    return torch.cat(rows)
