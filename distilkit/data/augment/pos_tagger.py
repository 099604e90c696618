"""An offline part-of-speech tagger: hashed window features and a linear classifier.

POS-guided word replacement (Tang et al., 2019) needs a tag for every word of the corpus
being augmented, with no download at run time. This tagger is trained on the POS column
of CoNLL-2003 (Penn Treebank tags), tags each word on its own from features of a
five-word window (no tag-to-tag dependencies), so tagging a batch of sentences is one
sparse matrix product. scikit-learn does the learning (``FeatureHasher`` and
``LinearSVC``); the saved model is the pruned weight matrix only, as float16 in a
compressed ``.npz``, and predicting needs numpy, scipy and the hasher.

Training lower-cases half of the sentences, so the tagger also works on lower-cased
corpora such as GLUE SST-2, where capitalisation cues are absent.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from distilkit.tasks.ner import conll_sentences

if TYPE_CHECKING:
    from sklearn.feature_extraction import FeatureHasher

# Bump when the features change: a saved model only works with the features it was
# trained on, and `load` refuses a file written for another version.
FEATURE_VERSION = 1
DEFAULT_N_FEATURES = 2**20
DEFAULT_RESOURCE = "pos_tagger.npz"

TaggedSentence = tuple[list[str], list[str]]
"""A sentence as (words, tags), both of the same length."""

_SHAPE_MAP = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    "X" * 26 + "x" * 26 + "d" * 10,
)
_REPEATS = re.compile(r"(.)\1+")


class PosTaggerError(ValueError):
    """Bad input to the POS tagger or an unusable model file."""


def _require_hasher() -> type[FeatureHasher]:
    try:
        from sklearn.feature_extraction import FeatureHasher
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise PosTaggerError(
            "the POS tagger needs scikit-learn: pip install 'distilkit[eval]'"
        ) from error
    return FeatureHasher


def word_shape(word: str) -> str:
    """Letters to X/x, digits to d, runs collapsed: "Reuters" -> "Xx", "1996-08-22" -> "d-d-d"."""
    return _REPEATS.sub(r"\1", word.translate(_SHAPE_MAP))


def sentence_features(words: Sequence[str]) -> list[list[str]]:
    """Feature strings for every word of a sentence: the word, its affixes and shape,
    capitalisation flags, and the words (and suffixes) up to two positions either side."""
    lowered = [word.lower() for word in words]
    padded = ["<s2>", "<s1>", *lowered, "</s1>", "</s2>"]
    suffixes = ["<s2>", "<s1>", *(word[-3:] for word in lowered), "</s1>", "</s2>"]
    features: list[list[str]] = []
    for i, word in enumerate(words):
        lower = lowered[i]
        j = i + 2  # index into the padded lists
        row = [
            "bias",
            "w=" + lower,
            "p1=" + lower[:1],
            "p2=" + lower[:2],
            "p3=" + lower[:3],
            "s1=" + lower[-1:],
            "s2=" + lower[-2:],
            "s3=" + lower[-3:],
            "s4=" + lower[-4:],
            "shape=" + word_shape(word),
            "w-1=" + padded[j - 1],
            "w+1=" + padded[j + 1],
            "w-2=" + padded[j - 2],
            "w+2=" + padded[j + 2],
            "s3-1=" + suffixes[j - 1],
            "s3+1=" + suffixes[j + 1],
            "w-1,w=" + padded[j - 1] + " " + lower,
            "w,w+1=" + lower + " " + padded[j + 1],
        ]
        if word[:1].isupper():
            row.append("title" if i > 0 else "title_first")
        if word.isupper() and any(ch.isalpha() for ch in word):
            row.append("upper")
        if any(ch.isdigit() for ch in word):
            row.append("digit")
        if "-" in word:
            row.append("hyphen")
        features.append(row)
    return features


def read_conll_pos(path: str | Path) -> list[TaggedSentence]:
    """Read (words, POS tags) sentences from a CoNLL-2003 file (``token POS chunk NER``).

    Sentences are separated by blank lines; ``-DOCSTART-`` lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise PosTaggerError(f"CoNLL file {path} does not exist")
    sentences: list[TaggedSentence] = []
    for lines in conll_sentences(path):
        for line_number, fields in lines:
            if len(fields) < 2:
                raise PosTaggerError(
                    f"{path}:{line_number}: expected 'token POS chunk NER', got "
                    f"{' '.join(fields)!r}"
                )
        sentences.append(([f[0] for _, f in lines], [f[1] for _, f in lines]))
    return sentences


def _check_sentences(sentences: Sequence[TaggedSentence]) -> None:
    for index, (words, tags) in enumerate(sentences):
        if len(words) != len(tags):
            raise PosTaggerError(
                f"sentence {index} has {len(words)} words but {len(tags)} tags: "
                "give one tag per word"
            )


class PosTagger:
    """A linear POS tagger over hashed features.

    weights: (n_tags, n_features) sparse float32; bias: (n_tags,) float32; tags: the
    tag names in row order.
    """

    def __init__(
        self,
        weights: sp.csr_matrix,
        bias: np.ndarray,
        tags: Sequence[str],
        n_features: int = DEFAULT_N_FEATURES,
    ):
        if weights.shape != (len(tags), n_features) or bias.shape != (len(tags),):
            raise PosTaggerError(
                f"weights {weights.shape} and bias {bias.shape} do not match "
                f"{len(tags)} tags x {n_features} features"
            )
        self.weights = sp.csr_matrix(weights, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.tags = list(tags)
        self.n_features = int(n_features)
        self._hasher = _require_hasher()(
            n_features=self.n_features, input_type="string", alternate_sign=False
        )

    @classmethod
    def train(
        cls,
        sentences: Sequence[TaggedSentence],
        seed: int,
        *,
        lowercase_fraction: float = 0.5,
        regularization_c: float = 0.1,
        min_feature_count: int = 2,
        max_weights: int | None = 200_000,
        n_features: int = DEFAULT_N_FEATURES,
    ) -> PosTagger:
        """Fit a one-vs-rest linear SVM (scikit-learn ``LinearSVC``) on the sentences.

        lowercase_fraction: share of sentences (drawn with the seed) lower-cased before
        training, so the tagger also serves lower-cased text. regularization_c: the SVM's C.
        min_feature_count: hashed features seen fewer times are dropped before fitting (this
        mostly saves time). max_weights: keep only that many weights of largest magnitude
        (None keeps all); this bounds the file size and costs no accuracy at 200,000.
        """
        from sklearn.svm import LinearSVC

        _check_sentences(sentences)
        if not sentences:
            raise PosTaggerError("no sentences to train on")
        if not 0.0 <= lowercase_fraction <= 1.0:
            raise PosTaggerError(f"lowercase_fraction must be in [0, 1], got {lowercase_fraction}")
        lowercase = np.random.default_rng(seed).random(len(sentences)) < lowercase_fraction
        training = [
            [word.lower() for word in words] if lower else list(words)
            for (words, _), lower in zip(sentences, lowercase, strict=True)
        ]
        hasher = _require_hasher()(n_features=n_features, input_type="string", alternate_sign=False)
        features = hasher.transform(row for words in training for row in sentence_features(words))
        labels = np.array([tag for _, tags in sentences for tag in tags])
        counts = np.bincount(features.indices, minlength=n_features)
        kept_columns = np.flatnonzero(counts >= min_feature_count)
        n_tags = len(set(labels.tolist()))
        if n_tags < 2:
            raise PosTaggerError(f"the training sentences use {n_tags} tag(s); at least 2 needed")
        classifier = LinearSVC(C=regularization_c, random_state=seed)
        classifier.fit(features[:, kept_columns], labels)
        kept_weights = np.array(classifier.coef_, dtype=np.float32, order="C")  # (n_tags, n_kept)
        bias = np.array(classifier.intercept_, dtype=np.float32)
        if n_tags == 2:  # scikit-learn keeps one row for two classes: score(tag 1) - score(tag 0)
            kept_weights = np.concatenate([-kept_weights / 2, kept_weights / 2])
            bias = np.concatenate([-bias / 2, bias / 2])
        if max_weights is not None and np.count_nonzero(kept_weights) > max_weights:
            flat = kept_weights.ravel()  # a view: zeroing it prunes kept_weights
            dropped = np.argpartition(np.abs(flat), flat.size - max_weights)[:-max_weights]
            flat[dropped] = 0.0
        rows, columns = np.nonzero(kept_weights)
        weights = sp.csr_matrix(
            (kept_weights[rows, columns], (rows, kept_columns[columns])),
            shape=(len(classifier.classes_), n_features),
        )
        return cls(weights, bias, [str(tag) for tag in classifier.classes_], n_features)

    def tag_batch(
        self, sentences: Sequence[Sequence[str]], words_per_chunk: int = 50_000
    ) -> list[list[str]]:
        """Tag many sentences at once: one list of tags per list of words.

        Works through about words_per_chunk words at a time to bound memory.
        """
        for index, words in enumerate(sentences):
            if isinstance(words, str):
                raise PosTaggerError(
                    f"sentence {index} is a string; give a list of words (split it first)"
                )
        tagged: list[list[str]] = []
        chunk: list[Sequence[str]] = []
        chunk_words = 0
        for words in sentences:
            chunk.append(words)
            chunk_words += len(words)
            if chunk_words >= words_per_chunk:
                tagged += self._tag_chunk(chunk)
                chunk, chunk_words = [], 0
        if chunk:
            tagged += self._tag_chunk(chunk)
        return tagged

    def _tag_chunk(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        rows = [row for words in sentences for row in sentence_features(words)]
        if not rows:
            return [[] for _ in sentences]
        features = self._hasher.transform(rows)  # (n_words, n_features)
        scores = (features @ self.weights.T).toarray() + self.bias  # (n_words, n_tags)
        names = [self.tags[i] for i in scores.argmax(axis=1)]
        tagged: list[list[str]] = []
        start = 0
        for words in sentences:
            tagged.append(names[start : start + len(words)])
            start += len(words)
        return tagged

    def tag(self, words: Sequence[str]) -> list[str]:
        """Penn Treebank tags for one sentence given as a list of words."""
        return self.tag_batch([words])[0]

    def evaluate(self, sentences: Sequence[TaggedSentence]) -> float:
        """Token accuracy (fraction of words whose predicted tag equals the gold tag)."""
        _check_sentences(sentences)
        predicted = self.tag_batch([words for words, _ in sentences])
        total = sum(len(tags) for _, tags in sentences)
        if total == 0:
            raise PosTaggerError("no words to evaluate on")
        correct = sum(
            p == g
            for pred, (_, gold) in zip(predicted, sentences, strict=True)
            for p, g in zip(pred, gold, strict=True)
        )
        return correct / total

    def save(self, path: str | Path) -> None:
        """Write the model as a compressed .npz (weights stored as float16)."""
        weights = self.weights.tocsr()
        np.savez_compressed(
            Path(path),
            feature_version=np.int64(FEATURE_VERSION),
            n_features=np.int64(self.n_features),
            tags=np.array(self.tags),
            bias=self.bias.astype(np.float32),
            data=weights.data.astype(np.float16),
            indices=weights.indices.astype(np.int32),
            indptr=weights.indptr.astype(np.int64),
        )

    @classmethod
    def load(cls, path: str | Path) -> PosTagger:
        """Read a model written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise PosTaggerError(f"POS tagger file {path} does not exist")
        with np.load(path, allow_pickle=False) as stored:
            version = int(stored["feature_version"])
            if version != FEATURE_VERSION:
                raise PosTaggerError(
                    f"{path} was trained with feature version {version} but this code "
                    f"computes version {FEATURE_VERSION}: retrain it with "
                    "scripts/train_pos_tagger.py"
                )
            n_features = int(stored["n_features"])
            tags = [str(tag) for tag in stored["tags"]]
            weights = sp.csr_matrix(
                (
                    stored["data"].astype(np.float32),
                    stored["indices"],
                    stored["indptr"],
                ),
                shape=(len(tags), n_features),
            )
            bias = stored["bias"].astype(np.float32)
        return cls(weights, bias, tags, n_features)

    @classmethod
    def load_default(cls) -> PosTagger:
        """The tagger shipped in ``distilkit/resources`` (see POS_TAGGER.md there)."""
        resource = resources.files("distilkit") / "resources" / DEFAULT_RESOURCE
        with resources.as_file(resource) as path:
            if not Path(path).is_file():
                raise PosTaggerError(
                    f"the packaged POS tagger {DEFAULT_RESOURCE} is missing: "
                    "run scripts/train_pos_tagger.py to build it"
                )
            return cls.load(path)


@functools.cache
def default_tagger() -> PosTagger:
    """The packaged POS tagger, loaded once per process (it takes a few seconds)."""
    return PosTagger.load_default()
