"""The seq2seq student: causal masking, cached decoding, greedy vs beam, saving; each
with the plain output and with the pointer-generator (copy) output."""

from __future__ import annotations

import pytest
import torch
from cmlm_helpers import tiny_seq2seq

from distilkit.methods.cmlm.seq2seq import (
    beam_search,
    greedy_decode,
    length_penalty,
    load_seq2seq,
)


def _sources() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 99, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a padded source
    mask[2, 4:] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.fixture(params=[False, True], ids=["plain", "copy"])
def copy_source(request) -> bool:
    return request.param


def test_a_future_token_cannot_change_an_earlier_output(copy_source):
    model = tiny_seq2seq(copy_source=copy_source)
    source, mask = _sources()
    decoder_input = torch.randint(5, 99, (3, 7), generator=torch.Generator().manual_seed(2))
    changed = decoder_input.clone()
    changed[:, 4] = (changed[:, 4] + 11) % 94 + 5
    before, after = model(source, mask, decoder_input), model(source, mask, changed)
    torch.testing.assert_close(before[:, :4], after[:, :4], atol=1e-6, rtol=0)
    assert (before[:, 4:] - after[:, 4:]).abs().amax() > 1e-3


def test_cached_incremental_decoding_equals_full_recomputation(copy_source):
    model = tiny_seq2seq(copy_source=copy_source)
    source, mask = _sources()
    decoder_input = torch.randint(5, 99, (3, 8), generator=torch.Generator().manual_seed(3))
    full = model(source, mask, decoder_input)  # (B, T, V)
    caches = model.start_cache(model.encode(source, mask), source)
    steps = [model.decode(decoder_input[:, t : t + 1], caches, mask, start=t) for t in range(8)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    # a chunk of 3 then single tokens agrees too
    caches = model.start_cache(model.encode(source, mask), source)
    first = model.decode(decoder_input[:, :3], caches, mask)
    rest = [model.decode(decoder_input[:, t : t + 1], caches, mask, start=t) for t in range(3, 8)]
    torch.testing.assert_close(torch.cat([first, *rest], 1), full, atol=1e-5, rtol=1e-5)


def test_source_padding_does_not_change_outputs(copy_source):
    model = tiny_seq2seq(copy_source=copy_source)
    source, mask = _sources()
    decoder_input = torch.randint(5, 99, (3, 5), generator=torch.Generator().manual_seed(4))
    batched = model(source, mask, decoder_input)
    alone = model(source[2:3, :4], mask[2:3, :4], decoder_input[2:3])
    torch.testing.assert_close(batched[2:3], alone, atol=1e-5, rtol=1e-5)


def test_greedy_equals_beam_of_one(copy_source):
    source, mask = _sources()
    lengths = set()
    for seed in range(1):
        for boost in (0.0, 7.5, 8.0, 12.0):
            model = tiny_seq2seq(seed, copy_source=copy_source)
            with torch.no_grad():  # a larger end-of-sequence bias: both stop early sometimes
                model.output_bias[3] += boost
            greedy = greedy_decode(model, source, mask, max_length=12)
            assert greedy == beam_search(model, source, mask, 12, beam_size=1, alpha=1.0)
            lengths |= {len(tokens) for tokens in greedy}
    assert {0, 12} <= lengths  # both stopping paths ran (the end-to-end test checks a
    # trained model, whose outputs end at varied lengths)


@torch.no_grad()
def _sequence_score(model, source, mask, tokens: list[int], alpha: float) -> float:
    """Length-normalised log-probability of ``tokens`` + eos, by teacher forcing."""
    full = [model.config.bos_id, *tokens, model.config.eos_id]
    logits = model(source, mask, torch.tensor([full[:-1]]))
    log_probs = logits.log_softmax(-1)[0, torch.arange(len(full) - 1), torch.tensor(full[1:])]
    return float(log_probs.sum()) / length_penalty(len(tokens) + 1, alpha)


def test_beam_search_finds_a_hypothesis_at_least_as_good_as_greedy(copy_source):
    model = tiny_seq2seq(5, copy_source=copy_source)
    with torch.no_grad():
        model.output_bias[3] += 12.0
    source, mask = _sources()
    for row in range(3):
        src, msk = source[row : row + 1], mask[row : row + 1]
        greedy = greedy_decode(model, src, msk, max_length=12)[0]
        beam = beam_search(model, src, msk, max_length=12, beam_size=5, alpha=0.6)[0]
        if len(greedy) < 12 and len(beam) < 12:  # both finished: comparable scores
            assert (
                _sequence_score(model, src, msk, beam, 0.6)
                >= _sequence_score(model, src, msk, greedy, 0.6) - 1e-5
            )


def test_save_and_load_round_trip(tmp_path, copy_source):
    model = tiny_seq2seq(7, copy_source=copy_source)
    model.save(tmp_path / "student")
    loaded = load_seq2seq(tmp_path / "student")
    source, mask = _sources()
    decoder_input = torch.randint(5, 99, (3, 5), generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(
        loaded(source, mask, decoder_input), model(source, mask, decoder_input)
    )
    assert loaded.word_embeddings.weight.data_ptr() != 0


def test_copy_output_is_a_distribution_that_reaches_source_tokens():
    model = tiny_seq2seq(8, copy_source=True)
    source, mask = _sources()
    source[0, -1] = model.config.eos_id  # [SEP] ends a source: it is not copied as a word
    decoder_input = torch.randint(5, 99, (3, 6), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        log_probs = model(source, mask, decoder_input)  # (B, T, V)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 6), atol=1e-5, rtol=0)
    with torch.no_grad():  # gate shut: every bit of mass is on the source's (unpadded) tokens
        model.copy_head.gate.bias.fill_(-1e4)
        probs = model(source, mask, decoder_input).exp()
    for row in range(3):
        kept = source[row][mask[row].bool()].unique()
        torch.testing.assert_close(probs[row][:, kept].sum(-1), torch.ones(6), atol=1e-5, rtol=0)
        padded_only = set(source[row][~mask[row].bool()].tolist()) - set(kept.tolist())
        for token in padded_only:
            assert float(probs[row][:, token].amax()) < 1e-9
    assert int(model.config.eos_id) in source[0].tolist()
    assert float(probs[0][:, model.config.eos_id].amax()) < 1e-9


def test_a_source_with_nothing_to_copy_gives_the_copy_path_no_mass():
    model = tiny_seq2seq(8, copy_source=True)
    source = torch.tensor([[model.config.bos_id, model.config.eos_id]])
    with torch.no_grad():
        log_probs = model(source, torch.ones_like(source), torch.tensor([[2, 7, 9]]))
    assert torch.isfinite(log_probs).all()
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(1, 3), atol=1e-5, rtol=0)


def test_a_copying_decoder_needs_the_source_ids():
    model = tiny_seq2seq(copy_source=True)
    source, mask = _sources()
    with pytest.raises(ValueError, match="source ids"):
        model.start_cache(model.encode(source, mask))


def test_resuming_with_the_other_output_is_a_clear_error(tmp_path, tiny_tokenizer):
    """A run saved before copying became the default resumes into a copying student: the
    objective names the flag instead of failing on missing weights."""
    from distilkit.methods.cmlm.student import Seq2SeqObjective
    from distilkit.settings import ConfigError

    tiny_seq2seq(copy_source=False).save(tmp_path / "plain")
    objective = Seq2SeqObjective(tiny_seq2seq(copy_source=True), 0.0, tiny_tokenizer)
    with pytest.raises(ConfigError, match="--no-copy-source"):
        objective.load(tmp_path / "plain")
    same = Seq2SeqObjective(tiny_seq2seq(1, copy_source=False), 0.0, tiny_tokenizer)
    same.load(tmp_path / "plain")  # the same output resumes
