"""FLOP counts of distillation against hand counts."""

from __future__ import annotations

import pytest

from distilkit.evaluate.mfu import distillation_flops, distillation_mfu, forward_flops
from distilkit.model.config import ModelConfig


def config(layers: int, hidden: int, inner: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=50, hidden_size=hidden, num_layers=layers, num_heads=1, intermediate_size=inner
    )


def test_forward_flops_by_hand():
    # 2 blocks, hidden 3, inner 5; 7 token positions, pairs 11:
    # per block linear 2*7*(4*9 + 2*15) = 924, attention 2*2*11*3 = 132
    assert forward_flops(config(2, 3, 5), tokens=7, pairs=11) == 2 * (924 + 132)


@pytest.mark.parametrize("share", [1.0, 0.25, 0.0])
def test_the_teacher_counts_only_the_rows_it_ran(share):
    teacher, student = config(4, 6, 10), config(1, 6, 10)
    teacher_pass = forward_flops(teacher, 13, 17)
    student_pass = forward_flops(student, 13, 17)
    total = distillation_flops(teacher, student, 13, 17, teacher_share=share)
    assert total == pytest.approx(share * teacher_pass + 3 * student_pass)
    counts = {"padded": 13, "pairs": 17, "seconds": 2.0, "tokens": 9}
    figures = distillation_mfu(teacher, student, counts, peak=total, teacher_share=share)
    assert figures["mfu"] == pytest.approx(0.5)  # half the peak: the work took 2 s
    assert figures["tokens_per_s"] == 4.5
