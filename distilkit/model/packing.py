"""The fast path's packed layout: only the real tokens of a padded batch, ``(tokens, dim)``.

Blocks run their dense layers on packed tokens and pad them back only where attention
needs the ``(batch, seq)`` grid; :class:`Padding` records where the real tokens sit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Padding:
    """Where the real tokens of a ``(batch, seq)`` batch sit, for the unpadded fast path.

    The fast path keeps token vectors packed as ``(tokens, dim)``: the real tokens only,
    in row-major order. ``indices``: (tokens,) their flat positions in ``batch * seq``,
    or None when no token is padding (then tokens == batch * seq and packing is a view);
    ``key_mask``: (batch, 1, 1, seq) bool, True where a key may be attended to, or None.
    """

    batch: int
    seq: int
    indices: torch.Tensor | None = None
    key_mask: torch.Tensor | None = None

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """``(tokens, dim)`` -> ``(batch, seq, dim)`` with zeros at padding."""
        if self.indices is None:
            return packed.view(self.batch, self.seq, -1)
        out = packed.new_zeros(self.batch * self.seq, packed.shape[-1])
        out.index_copy_(0, self.indices, packed)
        return out.view(self.batch, self.seq, -1)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """``(batch, seq, ...)`` -> ``(tokens, dim)``: the real tokens, trailing dims flattened."""
        flat = padded.reshape(self.batch * self.seq, -1)
        return flat if self.indices is None else flat.index_select(0, self.indices)
