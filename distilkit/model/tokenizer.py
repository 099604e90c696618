"""A thin wrapper over `tokenizers`: texts -> padded id tensors (and back).

The heavy lifting (normalisation, WordPiece / BPE / Unigram, offsets) is done by the Rust
`tokenizers` library; this module only adds what distilkit needs around it: building
from a checkpoint folder (``tokenizer.json`` of any model `tokenizers` reads, or a BERT
``vocab.txt``), truncation that warns instead of crashing, padding to the longest text
in a batch, and named special-token ids (BERT's ``[CLS]``... or RoBERTa's ``<s>``...).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Each special role and the tokens that fill it: BERT's, then RoBERTa's / XLM-R's.
SPECIAL_ROLES = {
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
    "mask": ("[MASK]", "<mask>"),
}


def normalizer_lowercases(spec: dict | None) -> bool:
    """Whether a ``tokenizer.json`` normalizer (its JSON dict) lower-cases the text."""
    if not spec:
        return False
    kind = spec.get("type")
    if kind == "Lowercase":
        return True
    if kind == "BertNormalizer":
        return bool(spec.get("lowercase", True))
    if kind == "Sequence":
        return any(normalizer_lowercases(part) for part in spec.get("normalizers", []))
    return False


class TokenizerError(ValueError):
    """A tokenizer file is missing, unreadable or lacks a required special token."""


@dataclass
class Batch:
    """Token ids for a batch of texts, padded on the right to the longest one.

    input_ids, attention_mask, token_type_ids: (batch, seq) int64.
    offsets: per text, a list of (start, end) character spans per token ((0, 0) for
    special tokens); sequence_ids: per text, per token 0/1 for which text of a pair it
    comes from, None for special tokens; word_ids: per token, the index of the word it
    belongs to (None for special tokens).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    offsets: list[list[tuple[int, int]]] = field(default_factory=list)
    sequence_ids: list[list[int | None]] = field(default_factory=list)
    word_ids: list[list[int | None]] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The tensors a model's forward takes, as keyword arguments."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


class Tokenizer:
    """WordPiece tokenizer with BERT special tokens.

    Build it with :meth:`from_folder`, :meth:`from_vocab` or :meth:`from_tokenizer_json`.
    """

    def __init__(
        self,
        backend: BackendTokenizer,
        max_length: int = 512,
        lowercase: bool = True,
        special_tokens: dict[str, str] | None = None,
    ):
        self.backend = backend
        self.backend.no_padding()
        self.backend.no_truncation()
        self.max_length = int(max_length)
        self.lowercase = lowercase
        # role -> token: the folder's own names first (tokenizer_config.json), then BERT's
        # and RoBERTa's
        tokens: dict[str, str] = {}
        for role, candidates in SPECIAL_ROLES.items():
            given = (special_tokens or {}).get(role)
            options = (given, *candidates) if given else candidates
            found = next((t for t in options if backend.token_to_id(t) is not None), None)
            if found is not None:
                tokens[role] = found
        missing = [role for role in SPECIAL_ROLES if role not in tokens]
        if missing:
            names = [" or ".join(SPECIAL_ROLES[role]) for role in missing]
            raise TokenizerError(
                f"the vocabulary lacks the special token(s) {names}: a vocabulary needs "
                "BERT's [PAD], [UNK], [CLS], [SEP] and [MASK] or RoBERTa's <pad>, <unk>, <s>, "
                "</s> and <mask> (or names given in tokenizer_config.json)"
            )
        self.special_tokens = tokens
        self.pad_token, self.unk_token = tokens["pad"], tokens["unk"]
        self.cls_token, self.sep_token = tokens["cls"], tokens["sep"]
        self.mask_token = tokens["mask"]
        self.pad_id = backend.token_to_id(self.pad_token)
        self.unk_id = backend.token_to_id(self.unk_token)
        self.cls_id = backend.token_to_id(self.cls_token)
        self.sep_id = backend.token_to_id(self.sep_token)
        self.mask_id = backend.token_to_id(self.mask_token)
        self._truncation_warnings = 0

    @property
    def model_kind(self) -> str:
        """The `tokenizers` model: ``WordPiece``, ``BPE``, ``Unigram`` or ``WordLevel``."""
        return type(self.backend.model).__name__

    # ------------------------------------------------------------------ building
    @classmethod
    def from_vocab(
        cls,
        vocab_path: str | Path,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        max_length: int = 512,
    ) -> Tokenizer:
        """Build a BERT WordPiece tokenizer from a ``vocab.txt`` (one token per line).

        ``strip_accents=None`` follows ``lowercase``, as BERT's original tokenizer does.
        """
        vocab_path = Path(vocab_path)
        if not vocab_path.is_file():
            raise TokenizerError(f"vocabulary file not found: {vocab_path}")
        try:
            lines = vocab_path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise TokenizerError(f"{vocab_path} is not UTF-8 text: {error}") from None
        vocab: dict[str, int] = {}
        for index, token in enumerate(lines):
            vocab.setdefault(token.rstrip("\n"), index)
        if not vocab:
            raise TokenizerError(f"{vocab_path} is empty: expected one WordPiece token per line")
        backend = BackendTokenizer(
            WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)
        )
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=True,
            strip_accents=lowercase if strip_accents is None else strip_accents,
            lowercase=lowercase,
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        # Special tokens typed in the text ("the [MASK] sat") stay whole, as in BERT.
        backend.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])
        missing = [t for t in ("[CLS]", "[SEP]") if t not in vocab]
        if missing:
            raise TokenizerError(f"{vocab_path} lacks the special token(s) {missing}")
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        return cls(backend, max_length=max_length, lowercase=lowercase)

    @classmethod
    def from_tokenizer_json(
        cls,
        path: str | Path,
        max_length: int = 512,
        special_tokens: dict[str, str] | None = None,
    ) -> Tokenizer:
        """Load a ``tokenizer.json`` written by `tokenizers` / `transformers` (WordPiece, BPE,
        Unigram, ...); cased or not as its normalizer says."""
        path = Path(path)
        try:
            backend = BackendTokenizer.from_file(str(path))
        except Exception as error:  # the Rust side raises a bare Exception
            raise TokenizerError(f"cannot read tokenizer file {path}: {error}") from None
        normalizer = json.loads(path.read_text(encoding="utf-8")).get("normalizer")
        return cls(
            backend,
            max_length=max_length,
            lowercase=normalizer_lowercases(normalizer),
            special_tokens=special_tokens,
        )

    @classmethod
    def from_folder(
        cls, folder: str | Path, max_length: int = 512, lowercase: bool | None = None
    ) -> Tokenizer:
        """Load from a checkpoint folder: ``tokenizer.json`` if present, else ``vocab.txt``.

        Lower-casing comes from ``tokenizer_config.json`` (``do_lower_case``) when
        ``lowercase`` is not given, so cased models stay cased.
        """
        folder = Path(folder)
        settings: dict = {}
        config_path = folder / "tokenizer_config.json"
        if config_path.is_file():
            try:
                settings = json.loads(config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise TokenizerError(f"{config_path} is not valid JSON: {error}") from None
        limit = settings.get("model_max_length")
        if isinstance(limit, int) and 0 < limit < max_length:
            max_length = limit
        if lowercase is None and "do_lower_case" in settings:
            lowercase = bool(settings["do_lower_case"])
        specials = _special_tokens(settings)
        if (folder / "tokenizer.json").is_file() and (
            lowercase is None or not (folder / "vocab.txt").is_file()
        ):
            return cls.from_tokenizer_json(
                folder / "tokenizer.json", max_length=max_length, special_tokens=specials
            )
        if (folder / "vocab.txt").is_file():
            strip = settings.get("strip_accents")
            return cls.from_vocab(
                folder / "vocab.txt",
                lowercase=True if lowercase is None else lowercase,
                strip_accents=strip if isinstance(strip, bool) else None,
                max_length=max_length,
            )
        if (folder / "tokenizer.json").is_file():
            tokenizer = cls.from_tokenizer_json(folder / "tokenizer.json", max_length=max_length)
            return tokenizer
        raise TokenizerError(
            f"no tokenizer in {folder}: expected vocab.txt or tokenizer.json beside config.json"
        )

    def save(self, folder: str | Path) -> None:
        """Write ``tokenizer.json``, ``vocab.txt`` and ``tokenizer_config.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"))
        if self.model_kind == "WordPiece":  # vocab.txt is BERT's format only
            vocab = sorted(
                self.backend.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1]
            )
            (folder / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), "utf-8")
        settings = {
            "model_max_length": self.max_length,
            **{f"{role}_token": token for role, token in self.special_tokens.items()},
        }
        if self.model_kind == "WordPiece":
            settings = {"do_lower_case": self.lowercase, **settings}
            settings["tokenizer_class"] = "BertTokenizer"
        else:  # any other tokenizer.json: transformers' generic fast tokenizer reads it
            settings["tokenizer_class"] = "PreTrainedTokenizerFast"
            settings["bos_token"], settings["eos_token"] = self.cls_token, self.sep_token
        (folder / "tokenizer_config.json").write_text(
            json.dumps(settings, indent=2) + "\n", "utf-8"
        )

    # ------------------------------------------------------------------ using
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> list[int]:
        return [self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id]

    def tokenize(self, text: str) -> list[str]:
        """Word pieces of one text, without [CLS]/[SEP]."""
        return self.backend.encode(text, add_special_tokens=False).tokens

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(int(token_id))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.backend.id_to_token(int(i)) or "[UNK]" for i in ids]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def encode_ids(self, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
        """Token ids of many texts, untruncated and unpadded (for corpus building)."""
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [encoding.ids for encoding in encodings]

    def __call__(
        self,
        texts: str | list[str],
        pairs: str | list[str] | None = None,
        max_length: int | None = None,
        truncation: bool = True,
        pad_to_multiple_of: int | None = None,
        warn_on_truncation: bool = True,
        alignment: bool = True,
    ) -> Batch:
        """Tokenize texts (and optional second texts of a pair) into a padded :class:`Batch`.

        Texts longer than ``max_length`` tokens (default: the model's limit) are cut,
        longest text of a pair first, and a warning says how many were cut.
        ``alignment=False`` leaves out the character offsets, sequence ids and word ids
        (the batch's lists stay empty): about twice as fast, for callers that need only
        the tensors (embedding, classification, serving).
        """
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(pairs, str):
            pairs = [pairs]
        texts = [self._check_text(t, "text") for t in texts]
        limit = min(max_length or self.max_length, self.max_length)
        if limit < 3:
            raise ValueError(f"max_length must be at least 3 tokens ([CLS] x [SEP]), got {limit}")
        if pairs is not None:
            pairs = [self._check_text(t, "second text") for t in pairs]
            if len(pairs) != len(texts):
                raise ValueError(
                    f"got {len(texts)} first texts but {len(pairs)} second texts: pairs must align"
                )
            if limit < 4:
                raise ValueError("max_length must be at least 4 tokens for a text pair")
        if truncation:
            self.backend.enable_truncation(limit, strategy="longest_first", stride=0)
        try:
            inputs = list(zip(texts, pairs, strict=False)) if pairs is not None else texts
            encode = self.backend.encode_batch if alignment else self.backend.encode_batch_fast
            encodings = encode(inputs) if inputs else []
        finally:
            self.backend.no_truncation()
        truncated = [bool(e.overflowing) for e in encodings]
        n_truncated = sum(truncated)
        if n_truncated and warn_on_truncation:
            warnings.warn(
                f"{n_truncated} of {len(encodings)} texts were longer than {limit} tokens "
                "and were truncated",
                stacklevel=2,
            )
        if not truncation and any(len(e.ids) > self.max_length for e in encodings):
            longest = max(len(e.ids) for e in encodings)
            raise ValueError(
                f"a text has {longest} tokens but the model reads at most {self.max_length}; "
                "pass truncation=True or split the text"
            )
        length = max((len(e.ids) for e in encodings), default=0)
        if pad_to_multiple_of and length % pad_to_multiple_of:
            length += pad_to_multiple_of - length % pad_to_multiple_of
        input_ids = np.full((len(encodings), length), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(encodings), length), dtype=np.int64)
        token_type_ids = np.zeros((len(encodings), length), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            input_ids[row, :n] = encoding.ids
            attention_mask[row, :n] = 1
            token_type_ids[row, :n] = encoding.type_ids
        batch = Batch(
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(attention_mask),
            token_type_ids=torch.from_numpy(token_type_ids),
            truncated=truncated,
        )
        if alignment:
            batch.offsets = [list(e.offsets) for e in encodings]
            batch.sequence_ids = [list(e.sequence_ids) for e in encodings]
            batch.word_ids = [list(e.word_ids) for e in encodings]
        return batch

    def encode_unpadded(self, texts: list[str], max_length: int | None = None) -> list[np.ndarray]:
        """Unpadded int64 token ids of each text, with [CLS] and [SEP], cut to
        ``max_length`` tokens without a warning: the serving fast path of recurrent
        students, which batch by length themselves (no padding, no alignment kept)."""
        texts = [self._check_text(t, "text") for t in texts]
        limit = min(max_length or self.max_length, self.max_length)
        if limit < 3:
            raise ValueError(f"max_length must be at least 3 tokens ([CLS] x [SEP]), got {limit}")
        self.backend.enable_truncation(limit, strategy="longest_first", stride=0)
        try:
            encodings = self.backend.encode_batch_fast(texts) if texts else []
        finally:
            self.backend.no_truncation()
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def pad(self, ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ``(rows, longest)`` int64 ids and attention mask of unpadded rows."""
        length = max(len(row) for row in ids)
        input_ids = np.full((len(ids), length), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(ids), length), dtype=np.int64)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = tokens
            attention_mask[row, : len(tokens)] = 1
        return input_ids, attention_mask

    @staticmethod
    def _check_text(text: object, what: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"each {what} must be a str, got {type(text).__name__}: {text!r:.60}")
        return text


def _special_tokens(settings: dict) -> dict[str, str]:
    """role -> token named in a ``tokenizer_config.json`` (strings or {"content": ...})."""
    tokens = {}
    for role in SPECIAL_ROLES:
        value = settings.get(f"{role}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            tokens[role] = value
    return tokens
