"""README.md model cards for every model folder distilkit writes (sentence-transformers-
style YAML front matter).

A card says what is known about the model: where it came from (teacher, the teacher
layers it started from, corpus, steps, or the folder it was saved from), its shape and
sentence recipe, how it scores beside its teacher when that was measured (the main job's
quality and speed table, with retention), and how to load it in distilkit and in the
libraries that read the folder (sentence-transformers and transformers, model2vec for
static tables). The front matter names the library and pipeline that fit the folder.

A card carries :data:`MARKER`; a README.md without it is the user's own and is never
overwritten (:func:`keep_user_readme`, :func:`write_card`). A card also carries its facts
as one JSON comment line (:data:`FACTS`), so a model loaded from a carded folder and saved
again keeps its card, refreshed (:func:`read_facts`).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from distilkit.model.card_usage import fills_masks, usage
from distilkit.model.hub import DEFAULT_MODEL

MARKER = "<!-- model card written by distilkit: a save rewrites it unless this line is removed -->"
FACTS = "<!-- distilkit card facts: {} -->"
_FACTS_LINE = re.compile(r"^<!-- distilkit card facts: (\{.*\}) -->$", re.M)
HUB_IDS = {DEFAULT_MODEL: "sentence-transformers/all-MiniLM-L6-v2"}

# kind -> (library_name, pipeline_tag, extra tags, what the model does)
KINDS: dict[str, tuple[str, str, list[str], str]] = {
    "sentence": (
        "sentence-transformers",
        "sentence-similarity",
        ["sentence-transformers", "feature-extraction", "sentence-similarity"],
        "it maps a text to one vector for semantic search, clustering and similarity.",
    ),
    "static": (
        "sentence-transformers",
        "sentence-similarity",
        ["sentence-transformers", "sentence-similarity", "static-embeddings", "model2vec"],
        "a static embedding table: a text's vector is the mean of its tokens' rows (a "
        "lookup and an average, no attention and no context).",
    ),
    "sequence_classification": (
        "transformers",
        "text-classification",
        ["transformers", "text-classification"],
        "it labels a text (or a text pair).",
    ),
    "token_classification": (
        "transformers",
        "token-classification",
        ["transformers", "token-classification"],
        "it labels each word of a text (named entities, tags).",
    ),
    "question_answering": (
        "transformers",
        "question-answering",
        ["transformers", "question-answering"],
        "it finds the answer to a question as a span of a context.",
    ),
    "seq2seq": (
        "distilkit",
        "text2text-generation",
        ["text2text-generation", "seq2seq"],
        "an encoder-decoder that writes an output text for an input text (distilkit's own "
        "format, which transformers does not read).",
    ),
    "bilstm": (
        "distilkit",
        "text-classification",
        ["text-classification", "bilstm"],
        "a BiLSTM text classifier (Tang et al., 2019): distilkit's own format, which "
        "transformers and sentence-transformers do not read.",
    ),
}
_LABELLED = ("sequence_classification", "token_classification")  # heads with label names


def is_ours(readme: Path) -> bool:
    """Whether ``readme`` is a card distilkit wrote (and may rewrite)."""
    try:
        return MARKER in readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def keep_user_readme(old_folder: Path, new_folder: Path) -> None:
    """Copy a README.md of the user's own from a folder about to be replaced into its
    replacement, so saving a model over an earlier one never loses it."""
    readme = old_folder / "README.md"
    if readme.is_file() and not is_ours(readme):
        shutil.copy2(readme, new_folder / "README.md")


@dataclass
class CardFacts:
    """What the saving job knows about a model; every field but ``name`` is optional.

    kind: a key of :data:`KINDS` (``sentence``, ``static``, a task head name, ``bilstm``,
    ``seq2seq``);
    source: the model it was loaded from and saved again; dims: length of its sentence
    vector; settings: further "how it was made" rows (label -> value); rows: report rows
    (teacher first) with name, layers, parameters, stsb_spearman, sst2_probe_accuracy,
    sentences_per_s; comparison: :func:`distilkit.evaluate.sentence.compare` of teacher
    and student (retention percentages, speed-up).
    """

    name: str
    kind: str = "sentence"
    teacher: str | None = None
    source: str | None = None
    architecture: str | None = None
    teacher_layers: list[int] | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    dims: int | None = None
    vocab_size: int | None = None
    labels: list[str] = field(default_factory=list)
    corpus: list[str] = field(default_factory=list)
    steps: int | None = None
    seconds: float | None = None
    losses: dict[str, float] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    comparison: dict | None = None
    pooling: str = "mean"
    dense: bool = False
    normalize: bool = False
    max_seq_length: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"card kind must be one of {sorted(KINDS)}, got {self.kind!r}")


def read_facts(folder: str | Path | None) -> CardFacts | None:
    """The facts of the distilkit card in ``folder``, or None (no card, the user's own
    README.md, or a card too old to carry its facts)."""
    if folder is None:
        return None
    readme = Path(folder) / "README.md"
    if not is_ours(readme):
        return None
    found = _FACTS_LINE.search(readme.read_text(encoding="utf-8", errors="replace"))
    if found is None:
        return None
    try:
        data = json.loads(found.group(1))
        known = {f.name for f in fields(CardFacts)}
        return CardFacts(**{k: v for k, v in data.items() if k in known})
    except (json.JSONDecodeError, TypeError, ValueError):
        return None


def carried_facts(
    loaded_from: str | Path | None, name: str, target: str | Path
) -> CardFacts | None:
    """What a model loaded from ``loaded_from`` (under ``name``) says about itself when
    saved to ``target``: its distilkit card's facts (teacher, steps, scores) with where it
    was loaded from added, or just where it was loaded from; None for a model built in
    memory."""
    if loaded_from is None:
        return None
    facts = read_facts(loaded_from)
    if facts is None:
        return CardFacts(name=Path(name).name or name, source=name)
    if facts.source is None and Path(loaded_from).resolve() != Path(target).resolve():
        return replace(facts, source=name)
    return facts


def _number(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _hub_id(name: str | None) -> str | None:
    """A Hub id for ``base_model``: the embedded default's, or an ``owner/name`` that is
    not a local path."""
    if not name:
        return None
    if name in HUB_IDS:
        return HUB_IDS[name]
    if "/" in name and name.count("/") == 1 and not Path(name).exists():
        return name
    return None


def _quality_table(facts: CardFacts) -> list[str]:
    if not facts.rows:
        if facts.kind not in ("sentence", "static"):
            return []
        return [
            "## Quality and speed",
            "",
            "Not evaluated when saved: `distilkit compare TEACHER THIS_FOLDER` scores it.",
            "",
        ]
    lines = [
        "## Quality and speed",
        "",
        "| model | layers | parameters | STS-B dev Spearman | SST-2 probe accuracy | "
        "sentences/s (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for row in facts.rows:
        parameters = row.get("parameters")
        lines.append(
            f"| {row.get('name', '?')} | {row.get('layers', '—')} | "
            f"{'—' if parameters is None else f'{parameters / 1e6:.1f} M'} | "
            f"{_number(row.get('stsb_spearman'))} | {_number(row.get('sst2_probe_accuracy'))} | "
            f"{_number(row.get('sentences_per_s'), 0)} |"
        )
    comparison = facts.comparison or {}
    if comparison.get("stsb_retention_pct") is not None:
        parts = [f"{comparison['stsb_retention_pct']:.1f}% of the teacher's STS-B Spearman"]
        if comparison.get("sst2_retention_pct") is not None:
            parts.append(f"{comparison['sst2_retention_pct']:.1f}% of its SST-2 probe accuracy")
        speed = comparison.get("speedup")
        tail = f" at {speed:.2f}x its throughput" if speed is not None else ""
        lines += [
            "",
            f"Retention: the student keeps {' and '.join(parts)}{tail} "
            "(measured side by side in the same run).",
        ]
    return [*lines, ""]


def _origin(facts: CardFacts) -> str:
    if facts.teacher and facts.steps is not None:
        return f"distilled from `{facts.teacher}` with distilkit"
    if facts.teacher:
        return f"made from `{facts.teacher}` with distilkit"
    if facts.source:
        return f"saved with distilkit from `{facts.source}`"
    return "saved with distilkit"


def _made_rows(facts: CardFacts) -> list[str]:
    rows = []
    if facts.teacher:
        rows.append(f"| teacher | `{facts.teacher}` |")
    if facts.source and facts.source != facts.teacher:
        rows.append(f"| saved from | `{facts.source}` |")
    if facts.architecture:
        rows.append(f"| architecture | {facts.architecture} |")
    if facts.teacher_layers:
        rows.append(f"| teacher layers it started from | {facts.teacher_layers} |")
    if facts.num_layers:
        rows.append(f"| layers, hidden size | {facts.num_layers}, {facts.hidden_size} |")
    if facts.vocab_size:
        rows.append(f"| vocabulary | {facts.vocab_size:,} entries |")
    if facts.kind == "static" and facts.dims:
        rows.append(f"| dimensions | {facts.dims} |")
    if facts.labels:
        rows.append(f"| labels | {', '.join(f'`{label}`' for label in facts.labels)} |")
    if facts.corpus:
        rows.append(f"| transfer corpus | {', '.join(f'`{c}`' for c in facts.corpus)} |")
    if facts.steps is not None:
        time = f" ({facts.seconds / 60:.1f} min)" if facts.seconds is not None else ""
        rows.append(f"| training steps | {facts.steps:,}{time} |")
    if facts.losses:
        losses = ", ".join(f"{k} {v:.4g}" for k, v in facts.losses.items())
        rows.append(f"| final losses | {losses} |")
    rows += [f"| {label} | {value} |" for label, value in facts.settings.items()]
    if facts.kind in ("sentence", "static"):
        recipe = f"{facts.pooling} pooling"
        if facts.dense:
            recipe += f", Dense to {facts.dims}"
        if facts.normalize:
            recipe += ", unit length"
        if facts.max_seq_length:
            recipe += f", at most {facts.max_seq_length} tokens"
        rows.append(f"| sentence vector | {recipe} |")
    return rows


def render_card(facts: CardFacts) -> str:
    """The README.md text for a model (``PATH`` stands for its folder)."""
    library, pipeline, tags, purpose = KINDS[facts.kind]
    tags = [*tags, *(["fill-mask"] if fills_masks(facts) else []), "distilkit"]
    if facts.teacher:
        tags.append("knowledge-distillation")
    front = [
        "---",
        f"library_name: {library}",
        f"pipeline_tag: {pipeline}",
        "tags:",
        *[f"- {tag}" for tag in tags],
    ]
    base = _hub_id(facts.teacher) or _hub_id(facts.source)
    if base:
        front.append(f"base_model: {base}")
    front.append("---")
    layers = f"{facts.num_layers}-layer " if facts.num_layers else ""
    what = "student" if facts.teacher else "model"
    facts_json = json.dumps(asdict(facts), ensure_ascii=False).replace(">", "\\u003e")
    lines = [
        *front,
        MARKER,
        FACTS.format(facts_json),
        "",
        f"# {facts.name}",
        "",
        f"A {layers}{what} {_origin(facts)}: {purpose}",
        "",
        "## How it was made" if facts.teacher else "## What it is",
        "",
        "| | |",
        "|---|---|",
        *_made_rows(facts),
        "",
        *_quality_table(facts),
        "## Use",
        "",
        *usage(facts),
    ]
    return "\n".join(lines)


def write_card(
    folder: str | Path, facts: CardFacts, shown_as: str | Path | None = None
) -> Path | None:
    """Write ``folder/README.md`` unless the user's own README.md is there; returns the
    path written, or None when a user's README was left alone. ``shown_as``: the folder
    name the card's code uses (default ``folder``; a save that builds the folder under a
    temporary name passes the final one)."""
    readme = Path(folder) / "README.md"
    if readme.exists() and not is_ours(readme):
        return None
    text = render_card(facts).replace('"PATH"', json.dumps(str(shown_as or folder)))
    readme.write_text(text, encoding="utf-8")
    return readme


def transformer_facts(
    model,
    recipe=None,
    max_seq_length: int | None = None,
    architecture: str | None = None,
    known: CardFacts | None = None,
) -> CardFacts:
    """The facts of a :class:`~distilkit.model.modeling.TransformerModel` about to be
    saved: what ``known`` says (an earlier card of the same model, or what the saving job
    knows), with the shape, head, labels and sentence recipe (``recipe``, a
    :class:`~distilkit.model.st_folder.SentenceModules`; default the model's own) taken
    from the model itself. ``max_seq_length``: the token limit the folder is saved with."""
    config = model.config
    recipe = recipe or getattr(model, "sentence_modules", None)
    base = known or CardFacts(name=f"{config.num_layers}-layer {architecture or config.layout}")
    stages = list(recipe.stages) if recipe is not None else []
    return replace(
        base,
        kind=config.head if config.head in KINDS else "sentence",  # a masked-LM head too
        architecture=architecture or base.architecture,
        num_layers=config.num_layers,
        hidden_size=config.hidden_size,
        dims=recipe.output_dim(config.hidden_size) if recipe is not None else config.hidden_size,
        vocab_size=config.vocab_size,
        labels=list(config.label_names or []) if config.head in _LABELLED else [],
        pooling="+".join(recipe.pooling) if recipe is not None else "mean",
        dense=any(not isinstance(stage, str) for stage in stages),
        normalize=bool(recipe is not None and recipe.normalize),
        max_seq_length=(recipe.max_seq_length if recipe is not None else None) or max_seq_length,
    )


def write_student_card(
    folder: str | Path,
    student,
    teacher: str,
    teacher_layers: list[int] | None = None,
    corpus: list[str] | None = None,
    steps: int | None = None,
    seconds: float | None = None,
    losses: dict[str, float] | None = None,
    rows: list[dict] | None = None,
    comparison: dict | None = None,
) -> Path | None:
    """Rewrite the card of a student just saved in ``folder`` with what the job knows
    (teacher, layers, corpus, steps, the quality table); the shape and recipe are the
    ones the save wrote. See :func:`write_card`."""
    config = student.config
    return update_card(
        folder,
        name=f"{config.num_layers}-layer student of {Path(str(teacher)).name}",
        teacher=str(teacher),
        teacher_layers=list(teacher_layers) if teacher_layers else None,
        corpus=[str(c) for c in corpus or []],
        steps=steps,
        seconds=seconds,
        losses={k: float(v) for k, v in (losses or {}).items() if isinstance(v, int | float)},
        rows=list(rows or []),
        comparison=comparison,
    )


def update_card(folder: str | Path, **changes) -> Path | None:
    """Rewrite the distilkit card in ``folder`` with some facts changed (what a job learnt
    after saving: its teacher, steps, scores); ``settings`` rows are added to the card's
    own. Returns None, writing nothing, when the folder holds the user's own README.md
    (or no card)."""
    facts = read_facts(folder)
    if facts is None:
        return None
    if "settings" in changes:
        changes["settings"] = {**facts.settings, **changes["settings"]}
    return write_card(folder, replace(facts, **changes))


def static_facts(
    vocab_size: int,
    dims: int,
    normalize: bool,
    metadata: dict | None = None,
    known: CardFacts | None = None,
) -> CardFacts:
    """The facts of a static table ``(vocab_size, dims)`` about to be saved: ``known``
    (an earlier card, or what the saving job knows) with the shape refreshed, and the
    teacher, PCA and weighting of ``metadata`` (``distilkit_static.json``'s keys)."""
    metadata = metadata or {}
    teacher = metadata.get("teacher")
    base = known or CardFacts(
        name=f"static student of {Path(str(teacher)).name}" if teacher else "static embeddings"
    )
    settings = dict(base.settings)
    if metadata.get("corpus_words"):
        settings["corpus words added to the vocabulary"] = f"{metadata['corpus_words']:,}"
    if metadata.get("pca_kept_variance") is not None:
        settings["PCA"] = (
            f"to {dims} dimensions, {100 * metadata['pca_kept_variance']:.1f}% of the variance kept"
        )
    if metadata.get("weighting"):
        weighting = metadata["weighting"]
        if weighting != "none" and metadata.get("sif_coefficient") is not None:
            weighting += f" (SIF, a = {metadata['sif_coefficient']:g})"
        settings["token weighting"] = weighting
    if "trained_on_sentences" in metadata:
        sentences = metadata["trained_on_sentences"] or 0
        settings.setdefault(
            "training",
            f"{sentences:,} sentences, {metadata.get('loss')} loss"
            if sentences
            else "none (PCA and weighting only)",
        )
    return replace(
        base,
        kind="static",
        teacher=str(teacher) if teacher else base.teacher,
        vocab_size=vocab_size,
        dims=dims,
        pooling="mean",
        dense=False,
        normalize=normalize,
        max_seq_length=None,
        settings=settings,
    )
