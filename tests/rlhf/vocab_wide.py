"""A dispatch mode that records how many rows of vocabulary-wide tensors operations allocate: the
memory check of the chunked output head, without a GPU."""

from __future__ import annotations

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode


class VocabWideTensors(TorchDispatchMode):
    """Records the most rows of any [..., vocab] tensor an operation allocates (views, such as the
    output head's transposed weight, allocate nothing and are skipped)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.most_rows = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.dim() >= 1 and leaf.shape[-1] == self.vocab:
                self.most_rows = max(self.most_rows, leaf.numel() // self.vocab)
        return out
