"""Clustering quality metrics: pure functions of two labelings ``{item: label}``.

Only items present in both mappings are scored. All three are computed from the
contingency table of (predicted, gold) label pairs, so they cost O(n + cells).

* :func:`bcubed` - item-averaged B-cubed precision / recall / F1 (Bagga and Baldwin
  1998; Amigó et al. 2009): for each item, the share of its predicted cluster that
  shares its gold label (precision) and the share of its gold cluster that was
  predicted with it (recall), each counting the item itself.
* :func:`pairwise` - precision / recall / F1 over all unordered pairs of items.
* :func:`adjusted_rand` - Hubert and Arabie's adjusted Rand index.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping

import numpy as np


def _tables(
    pred: Mapping[str, Hashable], gold: Mapping[str, Hashable]
) -> tuple[Counter[tuple[Hashable, Hashable]], Counter[Hashable], Counter[Hashable], int]:
    keys = [k for k in gold if k in pred]
    cells: Counter[tuple[Hashable, Hashable]] = Counter((pred[k], gold[k]) for k in keys)
    rows: Counter[Hashable] = Counter(pred[k] for k in keys)
    cols: Counter[Hashable] = Counter(gold[k] for k in keys)
    return cells, rows, cols, len(keys)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def bcubed(pred: Mapping[str, Hashable], gold: Mapping[str, Hashable]) -> tuple[float, float, float]:
    """B-cubed (precision, recall, F1); (0, 0, 0) when no item is shared."""
    cells, rows, cols, n = _tables(pred, gold)
    if n == 0:
        return 0.0, 0.0, 0.0
    # every item in cell (c, g) has precision |cell|/|c| and recall |cell|/|g|
    p = sum(k * k / rows[c] for (c, _), k in cells.items()) / n
    r = sum(k * k / cols[g] for (_, g), k in cells.items()) / n
    return p, r, _f1(p, r)


def _pairs(x: float) -> float:
    return x * (x - 1) / 2.0


def pairwise(pred: Mapping[str, Hashable], gold: Mapping[str, Hashable]) -> tuple[float, float, float]:
    """Pairwise (precision, recall, F1) over unordered pairs.

    With no predicted pair precision is 1.0 (nothing wrongly joined); with no gold pair
    recall is 1.0 (nothing to find).
    """
    cells, rows, cols, n = _tables(pred, gold)
    if n == 0:
        return 0.0, 0.0, 0.0
    tp = sum(_pairs(k) for k in cells.values())
    pp = sum(_pairs(k) for k in rows.values())
    gp = sum(_pairs(k) for k in cols.values())
    p = tp / pp if pp else 1.0
    r = tp / gp if gp else 1.0
    return p, r, _f1(p, r)


def adjusted_rand(pred: Mapping[str, Hashable], gold: Mapping[str, Hashable]) -> float:
    """Adjusted Rand index; 1.0 for identical partitions (also when both are trivial)."""
    cells, rows, cols, n = _tables(pred, gold)
    if n < 2:
        return 1.0
    sum_cells = float(np.sum(_pairs(np.fromiter(cells.values(), dtype=np.float64))))
    sum_rows = float(np.sum(_pairs(np.fromiter(rows.values(), dtype=np.float64))))
    sum_cols = float(np.sum(_pairs(np.fromiter(cols.values(), dtype=np.float64))))
    expected = sum_rows * sum_cols / _pairs(n)
    maximum = (sum_rows + sum_cols) / 2.0
    if maximum == expected:
        return 1.0
    return (sum_cells - expected) / (maximum - expected)
