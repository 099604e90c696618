"""CoNLL reading, word -> sub-word label alignment and back, and entity F1 end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distilkit.model.tokenizer import Tokenizer
from distilkit.tasks.metrics import entity_f1
from distilkit.tasks.ner import (
    IGNORE_INDEX,
    ConllFormatError,
    NerSentence,
    align_labels,
    read_conll,
    word_predictions,
)
from distilkit.tasks.registry import CONLL_LABELS

SHARED_DATA = Path("/work/shared/data")
BERT_VOCAB = Path("/work/shared/models/bert-base-uncased/vocab.txt")
LABEL = {name: index for index, name in enumerate(CONLL_LABELS)}

LONG_WORD = "x" * 120  # longer than WordPiece's 100-character limit -> [UNK]
TRICKY = NerSentence(
    words=["Müller", "visited", "U.S.-based", "firms", "with", "2,000", "staff", "but",
           "can't", "stay", "😀", "\u200b", LONG_WORD, "."],
    tags=["B-PER", "O", "B-MISC", "O", "O", "O", "O", "O",
          "O", "O", "B-MISC", "O", "B-ORG", "O"],
)  # fmt: skip
SHORT = NerSentence(words=["Berlin", "calls"], tags=["B-LOC", "O"])


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    if not BERT_VOCAB.is_file():
        pytest.skip(f"the bert-base-uncased vocab is not at {BERT_VOCAB}")
    return Tokenizer.from_vocab(BERT_VOCAB)


def _expected_labels(tokenizer: Tokenizer, sentence: NerSentence, length: int) -> list[int]:
    """[CLS], the tag on each word's first piece (counted word by word), [SEP], padding."""
    labels = [IGNORE_INDEX]
    for word, tag in zip(sentence.words, sentence.tags, strict=True):
        pieces = tokenizer.tokenize(word)
        if pieces:
            labels += [LABEL[tag]] + [IGNORE_INDEX] * (len(pieces) - 1)
    labels.append(IGNORE_INDEX)
    return labels + [IGNORE_INDEX] * (length - len(labels))


def _oracle_logits(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Noise everywhere, a clear winner at each labelled position, and a wrong winner
    ("B-ORG") on every unlabelled position so reading the wrong sub-word shows."""
    logits = torch.randn((*labels.shape, len(CONLL_LABELS)), generator=generator)
    logits[..., LABEL["B-ORG"]] += 5.0
    rows, positions = torch.nonzero(labels != IGNORE_INDEX, as_tuple=True)
    logits[rows, positions, labels[rows, positions]] += 20.0
    return logits


def test_tricky_words_tokenize_as_the_test_assumes(tokenizer: Tokenizer) -> None:
    assert len(tokenizer.tokenize("U.S.-based")) > 1
    assert len(tokenizer.tokenize("can't")) > 1
    assert tokenizer.tokenize("😀") == ["[UNK]"]
    assert tokenizer.tokenize(LONG_WORD) == ["[UNK]"]
    assert tokenizer.tokenize("\u200b") == []  # a word with no sub-word at all


def test_labels_on_first_subword_and_round_trip(tokenizer: Tokenizer) -> None:
    batch = align_labels(tokenizer, [TRICKY, SHORT], CONLL_LABELS, max_length=64)
    length = batch.input_ids.shape[1]
    assert batch.labels.tolist() == [
        _expected_labels(tokenizer, TRICKY, length),
        _expected_labels(tokenizer, SHORT, length),
    ]
    assert batch.attention_mask.sum(dim=1).tolist() == [len(ids) for ids in batch.word_ids]
    assert batch.num_words == [14, 2] and batch.lost_words == [0, 0]
    assert batch.input_ids[0, 0].item() == tokenizer.cls_id

    logits = _oracle_logits(batch.labels, torch.Generator().manual_seed(0))
    predictions = word_predictions(logits, batch.word_ids, batch.num_words)
    # Every word's tag comes back, including the zero-piece word (predicted "O").
    assert predictions == [[LABEL[tag] for tag in s.tags] for s in (TRICKY, SHORT)]


def test_label_all_subwords_continues_entities_with_i_tags(tokenizer: Tokenizer) -> None:
    sentence = NerSentence(words=["U.S.-based", "firms"], tags=["B-MISC", "O"])
    n_pieces = len(tokenizer.tokenize("U.S.-based"))
    batch = align_labels(tokenizer, [sentence], CONLL_LABELS, label_all_subwords=True)
    expected = (
        [IGNORE_INDEX, LABEL["B-MISC"]]
        + [LABEL["I-MISC"]] * (n_pieces - 1)
        + [LABEL["O"]] * len(tokenizer.tokenize("firms"))
        + [IGNORE_INDEX]
    )
    assert batch.labels.tolist() == [expected]


def test_truncated_words_are_reported_and_predicted_outside(tokenizer: Tokenizer) -> None:
    words = ["paris", "london", "rome", "madrid", "vienna", "oslo", "bern"]
    sentence = NerSentence(words=words, tags=["B-LOC"] * len(words))
    with pytest.warns(UserWarning, match=r"3 word\(s\) were cut off"):
        batch = align_labels(tokenizer, [sentence], CONLL_LABELS, max_length=6)
    assert batch.input_ids.shape == (1, 6)  # [CLS] + 4 one-piece words + [SEP]
    assert batch.lost_words == [3]
    logits = _oracle_logits(batch.labels, torch.Generator().manual_seed(1))
    assert word_predictions(logits, batch.word_ids, batch.num_words) == [
        [LABEL["B-LOC"]] * 4 + [0] * 3
    ]
    # Without num_words the sentence ends at its last word that has a sub-word.
    assert len(word_predictions(logits, batch.word_ids)[0]) == 4


def test_entity_f1_end_to_end_by_hand(tokenizer: Tokenizer) -> None:
    sentence = NerSentence(
        words=["Angela", "Merkel", "visited", "New", "York", "and", "Siemens", "AG"],
        tags=["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-ORG", "I-ORG"],
    )
    predicted_tags = ["B-PER", "I-PER", "B-MISC", "B-LOC", "O", "O", "B-ORG", "I-ORG"]
    n_tokens = 2 + sum(len(tokenizer.tokenize(word)) for word in sentence.words)
    last_pieces = len(tokenizer.tokenize("AG"))
    with pytest.warns(UserWarning, match=r"1 word\(s\) were cut off"):
        batch = align_labels(tokenizer, [sentence], CONLL_LABELS, max_length=n_tokens - last_pieces)
    wanted = NerSentence(words=sentence.words, tags=predicted_tags)
    wanted_labels = align_labels(tokenizer, [wanted], CONLL_LABELS).labels[
        :, : batch.labels.shape[1]
    ]
    logits = _oracle_logits(wanted_labels, torch.Generator().manual_seed(2))
    predictions = word_predictions(logits, batch.word_ids, batch.num_words)
    tags = [[CONLL_LABELS[index] for index in sentence_ids] for sentence_ids in predictions]
    # "AG" was cut off, so it is "O": predicted entities PER (right), MISC "visited",
    # LOC "New", ORG "Siemens" (all wrong) -> P 1/4; gold PER, LOC, ORG -> R 1/3;
    # F1 = 2 * (1/4) * (1/3) / (1/4 + 1/3) = 2/7.
    assert tags == [["B-PER", "I-PER", "B-MISC", "B-LOC", "O", "O", "B-ORG", "O"]]
    scores = entity_f1([sentence.tags], tags)
    assert scores["precision"] == pytest.approx(1 / 4)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 / 7)


def test_alignment_and_prediction_errors(tokenizer: Tokenizer) -> None:
    with pytest.raises(ConllFormatError, match=r"tag\(s\) \['B-DATE'\]"):
        align_labels(tokenizer, [NerSentence(["May"], ["B-DATE"])], CONLL_LABELS)
    with pytest.raises(ValueError, match="max_length"):
        align_labels(tokenizer, [SHORT], CONLL_LABELS, max_length=100_000)
    with pytest.raises(ConllFormatError, match="2 words but 1 tags"):
        NerSentence(["a", "b"], ["O"])
    batch = align_labels(tokenizer, [SHORT], CONLL_LABELS)
    with pytest.raises(ValueError, match="batch, seq, num_labels"):
        word_predictions(torch.zeros(1, 4), batch.word_ids)
    with pytest.raises(ValueError, match="same batch"):
        word_predictions(torch.zeros(2, 8, 9), batch.word_ids)
    assert tokenizer.backend.truncation is None


def test_read_conll(tmp_path: Path) -> None:
    path = tmp_path / "tiny.txt"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n",  # last sentence without blank line
        encoding="utf-8",
    )
    sentences = read_conll(path)
    assert sentences == [
        NerSentence(["EU", "rejects"], ["B-ORG", "O"], ["NNP", "VBZ"], ["B-NP", "B-VP"]),
        NerSentence(["Peter", "Blackburn"], ["B-PER", "I-PER"], ["NNP", "NNP"], ["B-NP", "I-NP"]),
    ]
    broken = tmp_path / "broken.txt"
    broken.write_text("EU NNP B-NP B-ORG\nrejects VBZ O\n", encoding="utf-8")
    with pytest.raises(ConllFormatError, match=r"broken\.txt:2: expected 4 columns"):
        read_conll(broken)
    iob1 = tmp_path / "iob1.txt"
    iob1.write_text("EU NNP B-NP ORG\n", encoding="utf-8")
    with pytest.raises(ConllFormatError, match=r"iob1\.txt:1: NER tag 'ORG' is not IOB2"):
        read_conll(iob1)
    with pytest.raises(FileNotFoundError, match="DISTILKIT_DATA"):
        read_conll(tmp_path / "missing.txt")


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no shared data at /work/shared/data")
def test_real_conll_valid_counts() -> None:
    sentences = read_conll(SHARED_DATA / "conll2003" / "valid.txt")
    assert len(sentences) == 3250
    assert sum(len(sentence.words) for sentence in sentences) == 51362
    assert all(len(s.pos_tags) == len(s.words) for s in sentences)
    assert {tag for s in sentences for tag in s.tags} == set(CONLL_LABELS)
