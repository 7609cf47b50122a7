"""A dataset wrapper that yields each sample's index with the sample.

The curricula keep per-sample state (:class:`~fastpid.integrations.DynCIM`'s weights,
:class:`~fastpid.integrations.SPICECurriculum`'s scores), so a training step needs the
training-set indices of its batch. :class:`IndexedDataset` puts them in front of every item::

    loader = DataLoader(IndexedDataset(TensorDataset(x1, x2, y)), batch_size=64, shuffle=True)
    for index, x1, x2, y in loader:
        kwargs = dyncim.loss_inputs(index)          # this batch's sample weights
"""
from __future__ import annotations

from torch.utils.data import Dataset

__all__ = ["IndexedDataset"]


class IndexedDataset(Dataset):
    """``dataset[i]`` preceded by ``i``: item ``i`` is ``(i, *dataset[i])`` when the wrapped
    item is a tuple (as :class:`torch.utils.data.TensorDataset` gives) and ``(i, dataset[i])``
    otherwise. With the default collate function the index of a batch arrives as an int64
    tensor ``(B,)``.

    Args:
        dataset: any map-style dataset (``__getitem__`` and ``__len__``).
    """

    def __init__(self, dataset):
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(f"dataset must be a map-style dataset (with __getitem__ and __len__), "
                            f"got {type(dataset).__name__}")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        return (i, *item) if isinstance(item, tuple) else (i, item)
