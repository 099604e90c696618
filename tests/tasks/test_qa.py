"""SQuAD reading, article split, windowed features and span decoding."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from distilkit.model.tokenizer import Tokenizer
from distilkit.tasks.metrics import squad_evaluate
from distilkit.tasks.qa import (
    QAExample,
    SquadFormatError,
    make_features,
    postprocess,
    read_squad,
    split_by_article,
)

SQUAD_DEV = Path("/work/shared/data/squad1.1/dev-v1.1.json")
BERT_VOCAB = Path("/work/shared/models/bert-base-uncased/vocab.txt")
needs_squad = pytest.mark.skipif(
    not SQUAD_DEV.is_file(), reason=f"no SQuAD dev file at {SQUAD_DEV}"
)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    if not BERT_VOCAB.is_file():
        pytest.skip(f"the bert-base-uncased vocab is not at {BERT_VOCAB}")
    return Tokenizer.from_vocab(BERT_VOCAB)


def _straddling_example(filler_before: int) -> QAExample:
    """A long context of one-piece filler words with a multi-word answer after
    ``filler_before`` of them."""
    answer = "Golden Retriever puppy"
    before = " ".join(["river"] * filler_before)
    context = f"{before} {answer} {' '.join(['stone'] * 40)}."
    return QAExample(
        id="dog",
        title="Dogs",
        question="Which dog?",
        context=context,
        answers=[(answer, len(before) + 1)],
    )


def _oracle_logits(features, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """Logits that point at the labelled start / end of each (chosen) feature."""
    start_logits = np.zeros(features.input_ids.shape)
    end_logits = np.zeros(features.input_ids.shape)
    for row in range(len(features)) if rows is None else rows:
        start_logits[row, features.start_positions[row]] = 10.0
        end_logits[row, features.end_positions[row]] = 10.0
    return start_logits, end_logits


def test_answer_straddling_a_window_edge_is_found_in_the_next(tokenizer: Tokenizer) -> None:
    # "which dog ?" is 3 tokens, so a window holds 32 - 3 - 3 = 26 context tokens; the
    # answer starts at context token 24 and so runs past the end of the first window.
    assert tokenizer.tokenize("Which dog?") == ["which", "dog", "?"]
    example = _straddling_example(filler_before=24)
    answer, answer_start = example.answers[0]
    answer_end = answer_start + len(answer)
    features = make_features(
        tokenizer, [example], max_length=32, doc_stride=8, max_question_length=8
    )
    assert tokenizer.backend.truncation is None
    assert len(features) >= 2 and features.example_index == [0] * len(features)

    first_window = [span for span in features.offsets[0] if span is not None]
    assert len(first_window) == 26
    assert answer_start < first_window[-1][1] < answer_end  # the edge cuts the answer
    assert (features.start_positions[0].item(), features.end_positions[0].item()) == (0, 0)

    start, end = features.start_positions[1].item(), features.end_positions[1].item()
    assert 0 < start <= end
    offsets = features.offsets[1]
    assert example.context[offsets[start][0] : offsets[end][1]] == answer

    start_logits, end_logits = _oracle_logits(features, rows=[1])
    # A tempting but partial span in the first window, scored lower than the oracle.
    last = max(i for i, span in enumerate(features.offsets[0]) if span is not None)
    start_logits[0, last - 1], end_logits[0, last] = 9.0, 9.0
    assert postprocess(start_logits, end_logits, features, [example]) == {"dog": answer}


def test_windows_overlap_by_doc_stride_and_cover_the_context(tokenizer: Tokenizer) -> None:
    example = _straddling_example(filler_before=50)
    features = make_features(
        tokenizer, [example], max_length=32, doc_stride=8, max_question_length=8
    )
    windows = [[span for span in offsets if span is not None] for offsets in features.offsets]
    for previous, current in itertools.pairwise(windows):
        assert previous[-8:] == current[:8]
    all_spans = sorted({span for window in windows for span in window})
    n_context_tokens = 2 + len(tokenizer.tokenize(example.context))  # + [CLS] [SEP]
    assert len(all_spans) == n_context_tokens - 2
    assert all_spans[0][0] == 0 and all_spans[-1][1] == len(example.context)
    assert features.input_ids.shape[1] == 32
    # Every window starts with the question: [CLS] which dog ? [SEP].
    question_ids = features.input_ids[:, :5]
    assert (question_ids == question_ids[0]).all()
    assert features.token_type_ids[0, :5].tolist() == [0] * 5


@pytest.mark.parametrize(
    ("context", "answer"),
    [
        ("The final score was (24–10).", "24–10"),  # "(" ends where the answer starts
        ("The final score was (24–10).", "10"),  # "–" ends where the answer starts
        ("It was held in Bern, Switzerland.", "Bern"),  # "," starts where it ends
    ],
)
def test_labels_of_answers_touching_punctuation(
    tokenizer: Tokenizer, context: str, answer: str
) -> None:
    example = QAExample("q", "t", "What?", context, [(answer, context.index(answer))])
    features = make_features(tokenizer, [example])
    start, end = features.start_positions[0].item(), features.end_positions[0].item()
    offsets = features.offsets[0]
    assert context[offsets[start][0] : offsets[end][1]] == answer


def test_long_questions_are_cut(tokenizer: Tokenizer) -> None:
    example = QAExample("q", "t", "one two three four five six seven", "the answer", [])
    features = make_features(
        tokenizer, [example], max_length=20, doc_stride=2, max_question_length=3
    )
    assert tokenizer.convert_ids_to_tokens(features.input_ids[0, :6].tolist()) == [
        "[CLS]", "one", "two", "three", "[SEP]", "the",
    ]  # fmt: skip
    assert (features.start_positions[0].item(), features.end_positions[0].item()) == (0, 0)
    with pytest.raises(ValueError, match="leaves no new context"):
        make_features(tokenizer, [example], max_length=20, doc_stride=10, max_question_length=8)


def test_postprocess_keeps_to_valid_spans(tokenizer: Tokenizer) -> None:
    example = QAExample("q", "t", "Where?", "in the old town hall of Bern", [("Bern", 24)])
    features = make_features(tokenizer, [example])
    offsets = features.offsets[0]
    context_positions = [i for i, span in enumerate(offsets) if span is not None]
    bern = context_positions[-1]
    start_logits = np.zeros(features.input_ids.shape)
    end_logits = np.zeros(features.input_ids.shape)
    start_logits[0, 1] = end_logits[0, 1] = 50.0  # the question token "where": not context
    start_logits[0, bern] = 40.0
    end_logits[0, context_positions[0]] = 40.0  # "in": would end before the start at "Bern"
    start_logits[0, context_positions[1]], end_logits[0, bern] = 5.0, 5.0
    # Valid spans: "Bern" (40 + 5) beats "in" (0 + 40) and "the .. Bern" (5 + 5).
    assert postprocess(start_logits, end_logits, features, [example]) == {"q": "Bern"}
    start_logits[0, bern] = end_logits[0, context_positions[0]] = 0.0
    assert postprocess(start_logits, end_logits, features, [example]) == {
        "q": "the old town hall of Bern"
    }
    # Six tokens is longer than max_answer_length=3: fall back to the best short span.
    short = postprocess(start_logits, end_logits, features, [example], max_answer_length=3)
    assert len(tokenizer.tokenize(short["q"])) <= 3
    with pytest.raises(ValueError, match="n_features=1"):
        postprocess(start_logits[:0], end_logits, features, [example])


def test_read_squad_validates(tmp_path: Path) -> None:
    def write(answer_start: int, ids: tuple[str, ...] = ("a1",)) -> Path:
        qas = [
            {
                "id": qid,
                "question": "Who?",
                "answers": [{"text": "Ada", "answer_start": answer_start}],
            }
            for qid in ids
        ]
        document = {
            "version": "1.1",
            "data": [{"title": "T", "paragraphs": [{"context": "By Ada.", "qas": qas}]}],
        }
        path = tmp_path / "squad.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        return path

    assert read_squad(write(3)) == [QAExample("a1", "T", "Who?", "By Ada.", [("Ada", 3)])]
    with pytest.raises(SquadFormatError, match="question 'a1': answer 'Ada' is not at character 2"):
        read_squad(write(2))
    with pytest.raises(SquadFormatError, match="occurs twice"):
        read_squad(write(3, ids=("a1", "a1")))
    (tmp_path / "bad.json").write_text('{"data": [{"paragraphs": []}]}', encoding="utf-8")
    with pytest.raises(SquadFormatError, match="missing field 'title'"):
        read_squad(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="DISTILKIT_DATA"):
        read_squad(tmp_path / "missing.json")


def test_split_by_article_has_no_shared_titles() -> None:
    examples = [QAExample(f"{t}{i}", t, "q", "c", []) for t in "ABCDEFGHIJ" for i in range(3)]
    train, held_out = split_by_article(examples, eval_fraction=0.2, seed=0)
    assert not {e.title for e in train} & {e.title for e in held_out}
    assert len({e.title for e in held_out}) == 2
    assert sorted(e.id for e in train + held_out) == sorted(e.id for e in examples)
    assert split_by_article(examples, 0.2, seed=0) == (train, held_out)
    with pytest.raises(ValueError, match="at least 2 titles"):
        split_by_article(examples[:3])
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_by_article(examples, eval_fraction=1.0)


@needs_squad
def test_real_squad_dev(tokenizer: Tokenizer) -> None:
    examples = read_squad(SQUAD_DEV)
    assert len(examples) == 10570
    assert sum(len(example.answers) for example in examples) == 34726
    train, held_out = split_by_article(examples, eval_fraction=0.2, seed=0)
    assert len({e.title for e in train}) + len({e.title for e in held_out}) == 48
    assert not {e.title for e in train} & {e.title for e in held_out}

    # Oracle logits from the labels give back the answers, except answers that start or
    # end inside a word piece ("8" in "18"): those come back as the whole piece.
    subset = examples[:300]
    features = make_features(tokenizer, subset, max_length=128, doc_stride=32)
    assert len(features) > len(subset)  # many contexts need several windows
    predictions = postprocess(*_oracle_logits(features), features, subset)
    for example in subset:
        answer = example.answers[0][0]
        if predictions[example.id] != answer:
            assert answer in predictions[example.id] and len(answer) < len(predictions[example.id])
    assert squad_evaluate(predictions, subset)["exact_match"] > 95.0
