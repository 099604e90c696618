"""Raw text -> packed, cached token-id sequences for masked-LM (DistilBERT-style) distillation.

Data flow: text files, table columns or a Hugging Face dataset -> text blocks
(:func:`iter_documents`) -> normalised paragraphs (:func:`split_paragraphs`) ->
word-piece ids in batches -> filtered paragraphs -> packed ``[CLS] ... [SEP]``
sequences that never cross a document -> one flat memory-mapped ``int32`` array plus
``int64`` offsets in a cache folder (:func:`build_corpus`) -> :class:`PackedCorpus`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from distilkit.data.tables import AUTO_TEXT_COLUMNS, TABLE_SUFFIXES, is_table, read_table
from distilkit.settings import process_alive

if TYPE_CHECKING:
    from distilkit.model.tokenizer import Tokenizer

CACHE_FORMAT_VERSION = 1
CACHE_FOLDER_NAME = ".distilkit-cache"
BLOCK_CHARS = 1 << 20  # a file is handed on in blocks of about this many characters
ENCODE_CHUNK = 2048  # paragraphs per call to Tokenizer.encode_ids
MAX_SEQUENCE_LENGTH = 512
UNITS = ("paragraph", "sentence")


class CorpusError(ValueError):
    """The corpus cannot be read: missing path, binary file, no usable text, bad settings."""


@dataclass
class CorpusSettings:
    """How paragraphs are filtered and packed.

    max_len: tokens per packed sequence including [CLS] and [SEP] (3..512).
    min_tokens: paragraphs with fewer word pieces are dropped.
    max_unk_fraction: paragraphs whose share of [UNK] pieces is above this are dropped.
    unit: ``"paragraph"`` (blank-line separated) or ``"sentence"`` (each paragraph split
    into sentences) — the text unit that filtering and packing see.
    pack: True fills each sequence with consecutive units of one document; False gives
    every unit a sequence of its own (short sequences, as a sentence encoder sees them).
    """

    max_len: int = 128
    min_tokens: int = 5
    max_unk_fraction: float = 0.5
    unit: str = "paragraph"
    pack: bool = True

    def __post_init__(self) -> None:
        if not 3 <= self.max_len <= MAX_SEQUENCE_LENGTH:
            raise CorpusError(
                f"max_len must be between 3 and {MAX_SEQUENCE_LENGTH} tokens ([CLS] + text + "
                f"[SEP]), got {self.max_len}"
            )
        if self.min_tokens < 1:
            raise CorpusError(f"min_tokens must be at least 1, got {self.min_tokens}")
        if not 0.0 <= self.max_unk_fraction <= 1.0:
            raise CorpusError(
                f"max_unk_fraction must be between 0 and 1, got {self.max_unk_fraction}"
            )
        if self.unit not in UNITS:
            raise CorpusError(f"unit must be one of {UNITS}, got {self.unit!r}")


# ---------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class _Source:
    """One input: a local text file or a ``hf:`` dataset spec."""

    name: str
    path: Path | None = None
    columns: tuple[str, ...] = ()  # a table's text columns; () = its "text" or "sentence"

    def fingerprint(self) -> list[Any]:
        if self.path is None:
            return [self.name]
        stat = self.path.stat()
        return [str(self.path), stat.st_size, stat.st_mtime_ns, *self.columns]


def _is_corpus_file(path: Path, root: Path) -> bool:
    relative = path.relative_to(root).parts
    if any(part.startswith(".") for part in relative):  # hidden files and our own cache
        return False
    if "license" in path.name.lower():
        return False
    return path.is_file() and (path.name.endswith(".txt") or path.name.endswith(".txt.gz"))


def _resolve_sources(paths: Iterable[str | Path]) -> list[_Source]:
    """Expand folders (recursively, sorted) into files; check that every path exists."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    sources: list[_Source] = []
    for raw in paths:
        if isinstance(raw, str) and raw.startswith("hf:"):
            _parse_hf_spec(raw)
            sources.append(_Source(name=raw))
            continue
        path, columns = _split_columns(Path(raw).expanduser())
        if not path.exists():
            raise CorpusError(f"corpus path not found: {path}")
        if is_table(path) and path.is_file():
            sources.append(_Source(name=str(path), path=path.resolve(), columns=columns))
            continue
        if path.is_dir():
            files = [p for p in sorted(path.rglob("*")) if _is_corpus_file(p, path)]
            if not files:
                raise CorpusError(f"no .txt or .txt.gz files in the folder {path}")
            sources.extend(_Source(name=str(p), path=p.resolve()) for p in files)
        else:
            sources.append(_Source(name=str(path), path=path.resolve()))
    if not sources:
        raise CorpusError("no corpus paths were given")
    return sources


def _split_columns(path: Path) -> tuple[Path, tuple[str, ...]]:
    """``data.tsv:sentence1,sentence2`` -> (``data.tsv``, columns); a path that exists as
    written, or has no ``:``, has no columns."""
    text = str(path)
    if path.exists() or ":" not in text:
        return path, ()
    head, _, tail = text.rpartition(":")
    if not is_table(head):
        if Path(head).is_file():
            raise CorpusError(
                f"{text}: only a table ({', '.join(TABLE_SUFFIXES)}) takes columns after ':'"
            )
        return path, ()
    columns = tuple(column.strip() for column in tail.split(","))
    if not all(columns):
        raise CorpusError(
            f"{text}: name the table's text columns after ':', separated by commas, "
            "e.g. train.tsv:sentence1,sentence2"
        )
    return Path(head), columns


def _iter_table_cells(source: _Source) -> Iterator[tuple[str, str]]:
    """One document per non-empty cell of the chosen columns, row by row."""
    assert source.path is not None
    rows = read_table(source.path, CorpusError)
    if not rows:
        return
    present = list(rows[0][1])
    columns = source.columns or tuple(c for c in AUTO_TEXT_COLUMNS if c in present)[:1]
    if not columns:
        raise CorpusError(
            f"{source.path} has no column named {' or '.join(AUTO_TEXT_COLUMNS)} (its columns "
            f"are {present}): name the text columns, e.g. --corpus {source.path}:{present[-1]}"
        )
    for where, row in rows:
        missing = [column for column in columns if column not in row]
        if missing:
            raise CorpusError(f"{where}: no column {missing[0]!r} (the row has {list(row)})")
        for column in columns:
            if row[column].strip():
                yield where, row[column]


def _parse_hf_spec(spec: str) -> tuple[str, str | None, str, str]:
    """``hf:<dataset>[:<config>]:<split>:<column>`` -> (dataset, config, split, column)."""
    parts = spec[len("hf:") :].split(":")
    if len(parts) == 3 and all(parts):
        return parts[0], None, parts[1], parts[2]
    if len(parts) == 4 and all(parts):
        return parts[0], parts[1], parts[2], parts[3]
    raise CorpusError(
        f"cannot read the dataset spec {spec!r}: expected "
        "hf:<dataset>[:<config>]:<split>:<column>, e.g. hf:wikitext:wikitext-103-raw-v1:train:text"
    )


def _iter_file_blocks(path: Path) -> Iterator[str]:
    """Text of one file in blocks that end at a blank line (BOM dropped, CRLF -> LF)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    lines: list[str] = []
    size = 0
    try:
        # utf-8-sig drops a leading BOM; text mode with newline=None turns \r\n and \r into \n
        with opener(path, "rt", encoding="utf-8-sig", newline=None) as handle:
            for line in handle:
                if "\x00" in line:
                    raise CorpusError(
                        f"{path} contains NUL bytes and looks like a binary file: "
                        "a text corpus (.txt or .txt.gz, UTF-8) is expected"
                    )
                lines.append(line)
                size += len(line)
                if size >= BLOCK_CHARS and not line.strip():
                    yield "".join(lines)
                    lines, size = [], 0
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"{path} is not valid UTF-8 ({error.reason}, byte {error.object[error.start]:#04x}): "
            "a text corpus (.txt or .txt.gz, UTF-8) is expected"
        ) from None
    except (gzip.BadGzipFile, EOFError) as error:
        raise CorpusError(f"{path} is not a readable gzip file: {error}") from None
    if lines:
        yield "".join(lines)


def _iter_hf_rows(spec: str) -> Iterator[tuple[str, str]]:
    dataset_name, config, split, column = _parse_hf_spec(spec)
    try:
        import datasets
    except ImportError:
        raise CorpusError(
            f"reading {spec!r} needs the Hugging Face `datasets` library: pip install datasets"
        ) from None
    rows = datasets.load_dataset(dataset_name, config, split=split)
    if column not in rows.column_names:
        raise CorpusError(f"{spec!r}: no column {column!r}; the columns are {rows.column_names}")
    for index, text in enumerate(rows[column]):
        if isinstance(text, str):
            yield f"{spec}#{index}", text


def iter_documents(paths: Iterable[str | Path]) -> Iterator[tuple[str, str]]:
    """Yield ``(source_name, text_block)`` for every file or dataset row in ``paths``.

    Paths are ``.txt`` / ``.txt.gz`` files, folders (searched recursively in sorted
    order for ``*.txt`` and ``*.txt.gz``, skipping ``*LICENSE*`` and hidden files),
    tables (``.tsv`` / ``.csv`` / ``.jsonl``; ``PATH:col1,col2`` names the text columns,
    else the ``text`` or ``sentence`` column is read; each cell is a document), or
    ``hf:<dataset>[:<config>]:<split>:<column>`` specs (one document per row; needs
    the ``datasets`` library). A large file comes in several consecutive blocks with the
    same ``source_name``, each ending at a blank line. Raises :class:`CorpusError` for a
    missing path, a binary or non-UTF-8 file, or a corpus with no text at all.
    """
    return _documents(_resolve_sources(paths))


def _documents(sources: list[_Source]) -> Iterator[tuple[str, str]]:
    found_text = False
    for source in sources:
        if source.path is None:
            blocks: Iterator[tuple[str, str]] = _iter_hf_rows(source.name)
        elif is_table(source.path):
            blocks = _iter_table_cells(source)
        else:
            blocks = ((source.name, block) for block in _iter_file_blocks(source.path))
        for name, block in blocks:
            if block.strip():
                found_text = True
                yield name, block
    if not found_text:
        names = ", ".join(s.name for s in sources[:3]) + (" ..." if len(sources) > 3 else "")
        raise CorpusError(f"the corpus is empty: no text in {names}")


def split_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each on one line, whitespace collapsed, NFC.

    Hard-wrapped lines (as in Project Gutenberg books) are joined with a space.
    """
    paragraphs: list[str] = []
    current: list[str] = []
    for line in text.split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return [" ".join(unicodedata.normalize("NFC", p).split()) for p in paragraphs]


# A sentence ends at . ! or ? (and any closing quotes or brackets) followed by white space
# and a capital, digit or opening quote; a few abbreviations that end in a full stop and
# are followed by a name do not end one.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]*[A-Z0-9])")
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "st",
        "jr",
        "sr",
        "prof",
        "rev",
        "gen",
        "col",
        "capt",
        "lt",
        "sgt",
        "mt",
        "no",
        "vs",
        "etc",
        "e.g",
        "i.e",
    ]
)


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of a normalised paragraph, by punctuation (no model, no download).

    >>> split_sentences('He left. "Why?" she asked. Mr. Holmes stayed.')
    ['He left.', '"Why?" she asked.', 'Mr. Holmes stayed.']
    """
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        candidate = paragraph[start : match.start()]
        last_word = candidate.rsplit(None, 1)[-1] if candidate.strip() else ""
        word = last_word.rstrip(".")
        if word.lower() in _ABBREVIATIONS or "." in word:  # "Mr.", "U.S."
            continue
        sentences.append(paragraph[start : match.end()].strip())
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences  # none is empty: each holds at least its closing punctuation


# ---------------------------------------------------------------------------- packing
class _Packer:
    """Greedily packs consecutive units of one document into ``[CLS] ... [SEP]``; with
    ``pack=False`` each unit gets its own sequence (a long one is still cut)."""

    def __init__(self, max_len: int, cls_id: int, sep_id: int, pack: bool = True):
        self.body = max_len - 2
        self.pack = pack
        self.cls_id, self.sep_id = cls_id, sep_id
        self.source: str | None = None
        self.buffer: list[int] = []
        self.sequences: list[np.ndarray] = []

    def add(self, source: str, ids: list[int]) -> None:
        if source != self.source or not self.pack:
            self.flush()
            self.source = source
        if len(self.buffer) + len(ids) <= self.body:
            self.buffer.extend(ids)
            return
        self.flush()
        # a paragraph longer than one sequence is cut; its tail may share with the next one
        start = 0
        while len(ids) - start > self.body:
            self._emit(ids[start : start + self.body])
            start += self.body
        self.buffer = list(ids[start:])

    def flush(self) -> None:
        if self.buffer:
            self._emit(self.buffer)
            self.buffer = []

    def _emit(self, body: list[int]) -> None:
        self.sequences.append(np.array([self.cls_id, *body, self.sep_id], dtype=np.int32))

    def take(self) -> list[np.ndarray]:
        done, self.sequences = self.sequences, []
        return done


def _chunks(items: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _iter_units(sources: list[_Source], unit: str = "paragraph") -> Iterator[tuple[str, str]]:
    """(source name, text) for every paragraph, or every sentence, of the corpus."""
    for source_name, block in _documents(sources):
        for paragraph in split_paragraphs(block):
            if not paragraph:
                continue
            if unit == "sentence":
                for sentence in split_sentences(paragraph):
                    yield source_name, sentence
            else:
                yield source_name, paragraph


def _write_npy_from_raw(raw_path: Path, npy_path: Path, count: int, dtype: type = np.int32) -> None:
    """Prefix a raw file of ``dtype`` with a .npy header, streaming (the corpus may not fit
    in RAM)."""
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": (count,),
    }
    with open(npy_path, "wb") as out, open(raw_path, "rb") as raw:
        np.lib.format.write_array_header_1_0(out, header)
        shutil.copyfileobj(raw, out, length=1 << 20)


def _pack_into(
    folder: Path,
    sources: list[_Source],
    tokenizer: Tokenizer,
    settings: CorpusSettings,
    progress: bool,
) -> dict[str, Any]:
    """Tokenize, filter and pack into ``folder`` (tokens.npy, offsets.npy); return meta.

    Streams: the text is read in blocks and tokenized in chunks of ``ENCODE_CHUNK``
    paragraphs, and token ids and sequence offsets go to disk chunk by chunk, so the
    memory used does not grow with the corpus."""
    packer = _Packer(settings.max_len, tokenizer.cls_id, tokenizer.sep_id, settings.pack)
    end = 0  # tokens written so far
    sequences = 0
    dropped = {"too_short": 0, "too_many_unk": 0}
    dropped_tokens = {"too_short": 0, "too_many_unk": 0}
    kept_paragraphs = documents = 0
    last_document: str | None = None
    raw_path, offsets_path = folder / "tokens.raw", folder / "offsets.raw"
    paragraphs = _iter_units(sources, settings.unit)
    bar = tqdm(desc="tokenizing corpus", unit=" paragraphs", disable=not progress)

    def write(ready: list[np.ndarray]) -> None:
        nonlocal end, sequences
        if not ready:
            return
        ends = end + np.cumsum([len(sequence) for sequence in ready], dtype=np.int64)
        for sequence in ready:
            raw.write(sequence.tobytes())
        offsets.write(ends.tobytes())
        end, sequences = int(ends[-1]), sequences + len(ready)

    with open(raw_path, "wb") as raw, open(offsets_path, "wb") as offsets, bar:
        offsets.write(np.zeros(1, np.int64).tobytes())
        for chunk in _chunks(paragraphs, ENCODE_CHUNK):
            all_ids = tokenizer.encode_ids([text for _, text in chunk])
            for (source_name, _), ids in zip(chunk, all_ids, strict=True):
                if len(ids) < settings.min_tokens:
                    reason = "too_short"
                elif ids.count(tokenizer.unk_id) > settings.max_unk_fraction * len(ids):
                    reason = "too_many_unk"
                else:
                    kept_paragraphs += 1
                    # the paragraphs of one document arrive together
                    documents += source_name != last_document
                    last_document = source_name
                    packer.add(source_name, ids)
                    continue
                dropped[reason] += 1
                dropped_tokens[reason] += len(ids)
            write(packer.take())
            bar.update(len(chunk))
            bar.set_postfix(tokens=end, refresh=False)
        packer.flush()
        write(packer.take())
    if sequences == 0:
        total = sum(dropped.values())
        raise CorpusError(
            f"no text is left after filtering: all {total} paragraphs were dropped "
            f"({dropped['too_short']} shorter than min_tokens={settings.min_tokens} word pieces, "
            f"{dropped['too_many_unk']} with more than {settings.max_unk_fraction:.0%} [UNK]); "
            "lower min_tokens or check that the vocabulary fits the corpus language"
        )
    _write_npy_from_raw(raw_path, folder / "tokens.npy", end)
    raw_path.unlink()
    _write_npy_from_raw(offsets_path, folder / "offsets.npy", sequences + 1, np.int64)
    offsets_path.unlink()
    return {
        "format_version": CACHE_FORMAT_VERSION,
        "num_sequences": sequences,
        "num_tokens": end,
        "num_paragraphs": kept_paragraphs,
        "num_documents": documents,
        "dropped_paragraphs": dropped,
        "dropped_tokens": dropped_tokens,
        "settings": asdict(settings),
        "vocab_size": tokenizer.vocab_size,
        "sources": [s.fingerprint() for s in sources],
    }


# ---------------------------------------------------------------------------- cache
def _is_writable_dir(folder: Path) -> bool:
    # root passes os.access everywhere; a folder without write bits is meant to stay read-only
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def default_cache_dir(paths: Iterable[str | Path]) -> Path:
    """``.distilkit-cache/`` beside the first local corpus path if that folder is
    writable, else ``~/.cache/distilkit/corpus/``. For a folder corpus the cache goes
    inside it (hidden, so it is never read as corpus text)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    local = [Path(p).expanduser() for p in paths if not str(p).startswith("hf:")]
    if local:
        base = local[0] if local[0].is_dir() else local[0].parent
        candidate = base / CACHE_FOLDER_NAME
        if _is_writable_dir(candidate) or (not candidate.exists() and _is_writable_dir(base)):
            return candidate
    return Path.home() / ".cache" / "distilkit" / "corpus"


def _cache_key(sources: list[_Source], tokenizer: Tokenizer, settings: CorpusSettings) -> str:
    """sha256 over the tokenizer (vocabulary + normaliser), settings and input files."""
    content = {
        "format_version": CACHE_FORMAT_VERSION,
        "tokenizer": tokenizer.backend.to_str(),
        "settings": asdict(settings),
        "sources": [s.fingerprint() for s in sources],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def remove_stale_builds(root: Path) -> None:
    """Remove the temporary folders (``.tmp-<key>-<pid>-<id>``) of builds whose process is
    gone: a build killed halfway leaves one behind, with a partial tokens file."""
    for entry in root.glob(".tmp-*"):
        parts = entry.name.split("-")
        if len(parts) >= 4 and parts[-2].isdigit() and not process_alive(int(parts[-2])):
            shutil.rmtree(entry, ignore_errors=True)


def build_corpus(
    paths: Iterable[str | Path],
    tokenizer: Tokenizer,
    settings: CorpusSettings | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> PackedCorpus:
    """Read, tokenize, filter and pack a corpus, or load it from the cache.

    The cache folder is keyed by the tokenizer, ``settings`` and each input file's
    path, size and modification time, so changing any of them rebuilds. It is written to
    a temporary folder first and moved into place, so an interrupted build leaves no
    half-written cache behind.
    """
    settings = settings or CorpusSettings()
    sources = _resolve_sources(paths)
    key = _cache_key(sources, tokenizer, settings)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(paths)
    folder = root / f"corpus-{key[:24]}"
    if (folder / "meta.json").is_file():
        return PackedCorpus.load(folder)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(root)
    temporary = root / f".tmp-{key[:24]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        meta = _pack_into(temporary, sources, tokenizer, settings, progress)
        (temporary / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", "utf-8")
        try:
            os.replace(temporary, folder)
        except OSError:
            if not (folder / "meta.json").is_file():  # not just another process being faster
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return PackedCorpus.load(folder)


# ---------------------------------------------------------------------------- the corpus
class PackedCorpus:
    """Packed ``[CLS] ... [SEP]`` sequences backed by memory-mapped arrays.

    ``corpus[i]`` is one sequence, an ``(length,)`` int32 array. A corpus may be a view
    of a subset of the sequences (see :meth:`split`); it shares the arrays on disk.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        meta: dict[str, Any],
        indices: np.ndarray | None = None,
        folder: Path | None = None,
    ):
        self._tokens = tokens  # (num_tokens,) int32, all sequences back to back
        self._offsets = offsets  # (num_sequences + 1,) int64
        self.meta = meta
        self.folder = folder
        all_lengths = np.diff(offsets)
        self._indices = indices
        self.lengths = all_lengths if indices is None else all_lengths[indices]

    @classmethod
    def load(cls, folder: str | Path) -> PackedCorpus:
        """Open a cache folder written by :func:`build_corpus`."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text("utf-8"))
            tokens = np.load(folder / "tokens.npy", mmap_mode="r")
            offsets = np.load(folder / "offsets.npy")
        except (OSError, ValueError) as error:
            raise CorpusError(
                f"the corpus cache {folder} is damaged ({error}); delete the folder to rebuild it"
            ) from None
        return cls(tokens, offsets, meta, folder=folder)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started with "spawn" reopen the memory map instead of
        # receiving a pickled copy of every token
        state = dict(self.__dict__)
        if self.folder is not None:
            state["_tokens"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._tokens is None:
            self._tokens = np.load(Path(self.folder) / "tokens.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> np.ndarray:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"corpus indices must be integers, got {type(index).__name__}")
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"sequence {index} is out of range for a corpus of {count}")
        row = int(index) % count
        if self._indices is not None:
            row = int(self._indices[row])
        return np.array(self._tokens[self._offsets[row] : self._offsets[row + 1]])

    @property
    def rows(self) -> np.ndarray:
        """The whole corpus's numbers of this view's sequences: ``(len(self),)`` int64."""
        if self._indices is None:
            return np.arange(len(self._offsets) - 1, dtype=np.int64)
        return np.asarray(self._indices, dtype=np.int64)

    @property
    def offsets(self) -> np.ndarray:
        """Where each sequence of the whole corpus starts in the token array:
        ``(num_sequences + 1,)`` int64 (a view shares them)."""
        return self._offsets

    @property
    def num_tokens(self) -> int:
        """Tokens in this corpus (or view), [CLS] and [SEP] included."""
        return int(self.lengths.sum())

    def split(self, heldout_fraction: float, seed: int) -> tuple[PackedCorpus, PackedCorpus]:
        """Deterministic random split into (train, heldout) views, each in corpus order."""
        if not 0.0 < heldout_fraction < 1.0:
            raise CorpusError(f"heldout_fraction must be between 0 and 1, got {heldout_fraction}")
        count = len(self)
        n_heldout = round(heldout_fraction * count)
        if n_heldout == 0 or n_heldout == count:
            raise CorpusError(
                f"a held-out fraction of {heldout_fraction} of {count} sequences leaves one side "
                "empty: use a larger corpus or another fraction"
            )
        order = np.random.default_rng(seed).permutation(count)
        own = self._indices if self._indices is not None else np.arange(count)
        heldout = np.sort(own[order[:n_heldout]])
        train = np.sort(own[order[n_heldout:]])
        return (
            PackedCorpus(self._tokens, self._offsets, self.meta, train, self.folder),
            PackedCorpus(self._tokens, self._offsets, self.meta, heldout, self.folder),
        )

    def token_counts(self, vocab_size: int) -> np.ndarray:
        """How often each token id occurs in this corpus (or view): ``(vocab_size,)`` int64."""
        counts = np.zeros(vocab_size, dtype=np.int64)
        all_lengths = np.diff(self._offsets)
        selected = np.ones(len(all_lengths), dtype=bool)
        if self._indices is not None:
            selected[:] = False
            selected[self._indices] = True
        step = 1 << 18  # sequences per chunk: bounded memory on a large memory map
        for first in range(0, len(all_lengths), step):
            last = min(first + step, len(all_lengths))
            chunk = np.asarray(self._tokens[self._offsets[first] : self._offsets[last]])
            if self._indices is not None:
                chunk = chunk[np.repeat(selected[first:last], all_lengths[first:last])]
            if chunk.size and int(chunk.max()) >= vocab_size:
                raise CorpusError(
                    f"the corpus holds token id {int(chunk.max())} but vocab_size is {vocab_size}: "
                    "the corpus was built with another tokenizer"
                )
            counts += np.bincount(chunk, minlength=vocab_size)
        return counts
