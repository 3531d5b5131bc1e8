"""Compiled (numba) numerics that give, bit for bit, what numpy gives.

The kernels of the detector simulation and of the profile likelihood replace short numpy expressions evaluated
millions of times. To keep every output identical to the numpy code they replace, they use only IEEE-exact
operations (``+ - * /``, ``sqrt``, comparisons) in numpy's association order, and sum in numpy's order.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def pairwise_sum(a: np.ndarray) -> float:
    """Sum of a contiguous 1-d float array in numpy's order (``np.add.reduce``'s pairwise summation: sequential
    below 8 entries, eight interleaved partial sums combined pairwise up to 128, halves beyond)."""
    n = a.shape[0]
    if n < 8:
        s = 0.0
        for k in range(n):
            s += a[k]
        return s
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
        i = 8
        while i < n - (n % 8):
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
            i += 8
        s = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            s += a[i]
            i += 1
        return s
    half = n // 2
    half -= half % 8
    return pairwise_sum(a[:half]) + pairwise_sum(a[half:])
