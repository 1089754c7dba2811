"""Exact similarity decisions on top of fast float32 arithmetic.

The Repr Filter's rule is `sim(c, k) > tau` with sim the dot product of the stored (float32,
normalised) vectors. BLAS/FAISS compute it in float32, in an order that depends on batch shape,
so two block sizes could disagree about a similarity within rounding of tau. We bound the float32
error rigorously (Higham, Accuracy and Stability, Thm 3.1: |fl(x.y) - x.y| <= gamma_d sum|x_i y_i|
<= gamma_d |x||y|, for any summation order) and re-decide only candidates inside that band, in
float64 and finally with `math.fsum` (a correctly rounded sum: order-independent). Every path then
takes the same decision, so the blocked filter equals the one-at-a-time filter bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

_U32 = 2.0 ** -24
_U64 = 2.0 ** -53


def _gamma(d: int, u: float) -> float:
    return d * u / (1.0 - d * u)


def float32_error_bound(dim: int, max_norm: float) -> float:
    """Bound on |float32 dot - exact dot| for vectors of norm <= max_norm (with a 2x safety factor)."""
    return 2.0 * _gamma(dim + 1, _U32) * max_norm * max_norm


def exact_dot(x: np.ndarray, y: np.ndarray) -> float:
    """Correctly rounded dot product of two float32 vectors (products are exact in float64)."""
    return math.fsum((x.astype(np.float64) * y.astype(np.float64)).tolist())


def exact_above(x: np.ndarray, kept: np.ndarray, approx: np.ndarray, tau: float, err: float) -> tuple[bool, int, float]:
    """Is the exact sim(x, kept_j) > tau for some j? `approx` holds the float32 similarities of x
    to every kept vector, each within `err` of exact. Only entries inside the band get an exact
    (fsum) dot product, so this costs nothing when no similarity is close to tau.
    Returns (decision, the deciding or nearest j, its similarity)."""
    if len(approx) == 0:
        return False, -1, float("-inf")
    best = int(np.argmax(approx))
    if approx[best] > tau + err:
        return True, best, float(approx[best])
    for j in np.flatnonzero(approx >= tau - err):
        exact = exact_dot(x, kept[j])
        if exact > tau:
            return True, int(j), exact
    return False, best, float(approx[best])


def decide_rows(approx: np.ndarray, tau: float, err: float) -> tuple[np.ndarray, np.ndarray]:
    """From float32 max-similarities: (certainly above tau, undecided within the error band)."""
    above = approx > tau + err
    band = ~above & (approx >= tau - err)
    return above, band
