"""README.md model cards for saved students (sentence-transformers-style front matter).

A card says where the student came from (teacher, the teacher layers it started from,
corpus, steps), how it scores beside its teacher when that is known (the main job's
quality and speed table, with retention), and how to load it in distilkit,
sentence-transformers and transformers. A card carries :data:`MARKER`; a README.md
without it is the user's own and is never overwritten (:func:`keep_user_readme`,
:func:`write_card`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "<!-- model card written by distilkit: a save rewrites it unless this line is removed -->"


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
    """What the saving job knows about a student; every field but ``name`` is optional.

    rows: report rows (teacher first) with name, layers, parameters, stsb_spearman,
    sst2_probe_accuracy, sentences_per_s; comparison: :func:`distilkit.evaluation.compare`
    of teacher and student (retention percentages, speed-up).
    """

    name: str
    teacher: str | None = None
    teacher_layers: list[int] | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    corpus: list[str] = field(default_factory=list)
    steps: int | None = None
    seconds: float | None = None
    losses: dict[str, float] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    comparison: dict | None = None
    pooling: str = "mean"
    normalize: bool = False
    max_seq_length: int | None = None


def _number(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _quality_table(facts: CardFacts) -> list[str]:
    if not facts.rows:
        return ["Not evaluated when saved: `distilkit compare TEACHER THIS_FOLDER` scores it."]
    lines = [
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
    return lines


def render_card(facts: CardFacts) -> str:
    """The README.md text for a student."""
    tags = [
        "sentence-transformers",
        "feature-extraction",
        "sentence-similarity",
        "distilkit",
        "knowledge-distillation",
    ]
    front = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags:",
        *[f"- {tag}" for tag in tags],
    ]
    if facts.teacher and "/" in facts.teacher and not Path(facts.teacher).exists():
        front.append(f"base_model: {facts.teacher}")
    front.append("---")
    layers = f"{facts.num_layers}-layer " if facts.num_layers else ""
    source = f" from `{facts.teacher}`" if facts.teacher else ""
    lines = [
        *front,
        MARKER,
        "",
        f"# {facts.name}",
        "",
        f"A {layers}student distilled{source} with "
        "distilkit (general-purpose knowledge distillation): "
        "it maps a text to one vector for semantic search, clustering and similarity.",
        "",
        "## How it was made",
        "",
        "| | |",
        "|---|---|",
    ]
    if facts.teacher:
        lines.append(f"| teacher | `{facts.teacher}` |")
    if facts.teacher_layers:
        lines.append(f"| teacher layers it started from | {facts.teacher_layers} |")
    if facts.num_layers:
        lines.append(f"| layers, hidden size | {facts.num_layers}, {facts.hidden_size} |")
    if facts.corpus:
        lines.append(f"| transfer corpus | {', '.join(f'`{c}`' for c in facts.corpus)} |")
    if facts.steps is not None:
        time = f" ({facts.seconds / 60:.1f} min)" if facts.seconds is not None else ""
        lines.append(f"| training steps | {facts.steps:,}{time} |")
    if facts.losses:
        losses = ", ".join(f"{k} {v:.4g}" for k, v in facts.losses.items())
        lines.append(f"| final losses | {losses} |")
    recipe = f"{facts.pooling} pooling" + (", unit length" if facts.normalize else "")
    if facts.max_seq_length:
        recipe += f", at most {facts.max_seq_length} tokens"
    lines.append(f"| sentence vector | {recipe} |")
    lines += [
        "",
        "## Quality and speed",
        "",
        *_quality_table(facts),
        "",
        "## Use",
        "",
        "distilkit:",
        "",
        "```python",
        "import distilkit",
        "",
        'model = distilkit.load("PATH")',
        'vectors = model.embed(["A sentence.", "Another one."])  '
        "# the folder's own pooling and normalisation",
        "```",
        "",
        "sentence-transformers (the same vectors):",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        'model = SentenceTransformer("PATH")',
        'vectors = model.encode(["A sentence.", "Another one."])',
        "```",
        "",
        "transformers (token vectors; pool them yourself):",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("PATH")',
        'model = AutoModel.from_pretrained("PATH")',
        'batch = tokenizer(["A sentence."], padding=True, truncation=True, return_tensors="pt")',
        "tokens = model(**batch).last_hidden_state  # (batch, seq, hidden)",
    ]
    if facts.pooling == "mean":
        lines += [
            'mask = batch["attention_mask"].unsqueeze(-1).float()',
            "vectors = (tokens * mask).sum(1) / mask.sum(1)",
        ]
    elif facts.pooling == "cls":
        lines.append("vectors = tokens[:, 0]")
    if facts.normalize:
        lines.append("vectors = torch.nn.functional.normalize(vectors, dim=-1)")
    lines += ["```", ""]
    return "\n".join(lines)


def write_card(folder: str | Path, facts: CardFacts) -> Path | None:
    """Write ``folder/README.md`` unless the user's own README.md is there; returns the
    path written, or None when a user's README was left alone."""
    readme = Path(folder) / "README.md"
    if readme.exists() and not is_ours(readme):
        return None
    readme.write_text(render_card(facts).replace("PATH", str(folder)), encoding="utf-8")
    return readme


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
    """The card of a student saved in ``folder`` (a :class:`TransformerModel` whose
    ``sentence_modules`` recipe, when it has one, gives pooling, normalisation and length
    limit), from what the saving job knows; see :func:`write_card`."""
    config = student.config
    recipe = getattr(student, "sentence_modules", None)
    pooling, normalize, limit = "mean", False, None
    if recipe is not None:
        pooling = "+".join(recipe.pooling)
        normalize, limit = recipe.normalize, recipe.max_seq_length
    facts = CardFacts(
        name=f"{config.num_layers}-layer student of {Path(str(teacher)).name}",
        teacher=str(teacher),
        teacher_layers=list(teacher_layers) if teacher_layers else None,
        num_layers=config.num_layers,
        hidden_size=config.hidden_size,
        corpus=[str(c) for c in corpus or []],
        steps=steps,
        seconds=seconds,
        losses={k: float(v) for k, v in (losses or {}).items() if isinstance(v, int | float)},
        rows=list(rows or []),
        comparison=comparison,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=limit,
    )
    return write_card(folder, facts)
