"""Selection: the exact block-resolved Repr Filter on a FAISS index, and baseline strategies."""

from deita_ray.select.repr_filter import FilterResult, repr_filter, select_diverse, selection_order

__all__ = ["FilterResult", "repr_filter", "select_diverse", "selection_order"]
