"""sentence-transformers folders, both ways: how token vectors become a sentence vector.

A sentence-transformers folder is a Hugging Face checkpoint plus a recipe, listed in
``modules.json``: the transformer (its ``sentence_bert_config.json`` gives
``max_seq_length`` and ``do_lower_case``), a pooling (``1_Pooling/config.json``: cls, max,
mean, mean_sqrt_len_tokens, weightedmean, lasttoken, concatenated in that order when
several are on; ``include_prompt``), optional ``Dense`` projections and an optional
``Normalize``. ``config_sentence_transformers.json`` holds the prompts, the similarity
function, sentence-transformers' default ``truncate_dim`` and (distilkit's own key, which
sentence-transformers ignores) ``matryoshka_dims``: the prefix widths a Matryoshka-trained
model was taught to keep. :func:`read_sentence_modules` reads that recipe into
:class:`SentenceModules`, :meth:`SentenceModules.encode` runs it exactly as
sentence-transformers does by default, and :func:`write_sentence_modules` writes it back,
so a student keeps its teacher's pooling, normalisation and length limit. A folder
without ``modules.json`` gets sentence-transformers' own default: mean pooling, no
normalisation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

# sentence-transformers' pooling modes, in the order it concatenates them.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# distilkit's pooling names (Encoder.embed(pooling=...)) <-> sentence-transformers' modes.
FROM_DISTILKIT = {"mean": "mean", "cls": "cls", "max": "max", "last": "lasttoken"}
ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": torch.tanh,
    "torch.nn.modules.linear.Identity": lambda x: x,
    "torch.nn.modules.activation.ReLU": F.relu,
    "torch.nn.modules.activation.GELU": F.gelu,
    "torch.nn.modules.activation.Sigmoid": torch.sigmoid,
    "torch.nn.modules.activation.SiLU": F.silu,
}
_PREFIX = "sentence_transformers.models."
_ST_TYPES = {
    "Transformer": ("sentence_transformers.models.Transformer",),
    "Pooling": ("sentence_transformers.models.Pooling",),
    "Dense": ("sentence_transformers.models.Dense",),
    "Normalize": ("sentence_transformers.models.Normalize",),
    "Dropout": ("sentence_transformers.models.Dropout",),
}


class SentenceFolderError(ValueError):
    """A sentence-transformers module in a folder is malformed or not one distilkit runs."""


@dataclass
class DenseLayer:
    """``activation(x W^T + b)``: a sentence-transformers ``Dense`` module.

    weight: (out_features, in_features); bias: (out_features,) or None; activation: the
    torch class name sentence-transformers writes (``torch.nn.modules.activation.Tanh``).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    activation: str = "torch.nn.modules.activation.Tanh"

    def __call__(self, vectors: torch.Tensor) -> torch.Tensor:
        """(batch, in_features) -> (batch, out_features)."""
        out = F.linear(
            vectors,
            self.weight.to(vectors.dtype),
            None if self.bias is None else self.bias.to(vectors.dtype),
        )
        return ACTIVATIONS[self.activation](out)


def cut_width(
    full: int,
    dimensions: int | None,
    default: int | None = None,
    trained: tuple[int, ...] = (),
) -> int:
    """Length of a ``full``-long sentence vector cut to ``dimensions`` (None: ``default``,
    a folder's ``truncate_dim``, else ``full``); a ValueError unless ``1 <= dimensions <=
    full`` (naming the ``trained`` Matryoshka widths, if any)."""
    dimensions = default if dimensions is None else dimensions
    if dimensions is None:
        return full
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise ValueError(f"dimensions must be an integer, got {dimensions!r}")
    if not 1 <= dimensions <= full:
        kept = f" (trained to keep {', '.join(map(str, trained))})" if trained else ""
        raise ValueError(
            f"dimensions must be between 1 and {full}, the sentence vector's length"
            f"{kept}; got {dimensions}"
        )
    return dimensions


@dataclass
class SentenceModules:
    """What follows the transformer in a sentence-transformers folder.

    pooling: sentence-transformers mode names, concatenated in :data:`POOLING_MODES`
    order; stages: after pooling, in order, :class:`DenseLayer` or the string
    ``"normalize"``; max_seq_length: tokens read (None: the tokenizer's limit).
    """

    pooling: tuple[str, ...] = ("mean",)
    include_prompt: bool = True
    stages: list[DenseLayer | str] = field(default_factory=list)
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    from_folder: bool = False
    truncate_dim: int | None = None  # sentence-transformers' default truncation
    matryoshka_dims: tuple[int, ...] = ()  # prefix widths the model was trained to keep

    @property
    def normalize(self) -> bool:
        """Whether the recipe ends in unit-length vectors."""
        return bool(self.stages) and self.stages[-1] == "normalize"

    def output_dim(self, hidden_size: int) -> int:
        """Length of the (untruncated) sentence vector for a transformer of width
        ``hidden_size``."""
        dim = hidden_size * len(self.pooling)
        for stage in self.stages:
            if isinstance(stage, DenseLayer):
                dim = stage.weight.shape[0]
        return dim

    def cut_width(self, full: int, dimensions: int | None = None) -> int:
        """Length of a ``full``-long sentence vector cut to ``dimensions`` (None: the
        folder's ``truncate_dim``, else ``full``); an error unless ``1 <= dimensions <= full``."""
        return cut_width(full, dimensions, self.truncate_dim, self.matryoshka_dims)

    def for_width(self, hidden_size: int) -> SentenceModules:
        """The recipe for a student of width ``hidden_size``: Dense projections sized for
        another width cannot follow, so they are dropped then."""
        dense = [s for s in self.stages if isinstance(s, DenseLayer)]
        if not dense or dense[0].weight.shape[1] == hidden_size * len(self.pooling):
            return self
        stages = [s for s in self.stages if not isinstance(s, DenseLayer)]
        return SentenceModules(**{**vars(self), "stages": stages})

    def with_pooling(self, pooling: str | None, hidden_size: int) -> SentenceModules:
        """The recipe with its pooling step replaced by a distilkit pooling name (mean |
        cls | max | last; None: the recipe as it is), as sentence-transformers would run
        a Pooling module of that mode: the Dense and Normalize stages stay. A Dense layer
        that takes another width than the new pooling gives is an error."""
        if pooling is None:
            return self
        if pooling not in FROM_DISTILKIT:
            raise ValueError(f"pooling must be one of {tuple(FROM_DISTILKIT)}, got {pooling!r}")
        dense = next((s for s in self.stages if isinstance(s, DenseLayer)), None)
        if dense is not None and dense.weight.shape[1] != hidden_size:
            raise SentenceFolderError(
                f"pooling={pooling!r} gives {hidden_size}-wide vectors but the model's Dense "
                f"layer takes {dense.weight.shape[1]} (its own pooling is "
                f"{'+'.join(self.pooling)}): leave pooling to the model"
            )
        return SentenceModules(**{**vars(self), "pooling": (FROM_DISTILKIT[pooling],)})

    def prompt(self, prompt_name: str | None, prompt: str | None) -> str | None:
        """The prompt text to put before each input, as sentence-transformers picks it."""
        if prompt is not None:
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ValueError(
                    f"prompt_name {prompt_name!r} is not one of the model's prompts "
                    f"{sorted(self.prompts)}"
                )
            return self.prompts[prompt_name]
        if self.default_prompt_name is not None:
            return self.prompts.get(self.default_prompt_name)
        return None

    def encode(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        pooling: str | None = None,
        normalize: bool | None = None,
        prompt_length: int | None = None,
        dimensions: int | None = None,
    ) -> torch.Tensor:
        """Sentence vectors ``(batch, dim)`` float32 from token vectors ``(batch, seq, hidden)``.

        pooling None runs the recipe (its pooling, then its Dense stages and Normalize); a
        distilkit pooling name (mean | cls | max | last) replaces the recipe's pooling and
        keeps the rest (see :meth:`with_pooling`). normalize None follows the recipe's
        Normalize; True or False overrides it. prompt_length: tokens of the prompt at
        each sequence start, left out of the pooling when the recipe says
        ``include_prompt: false``. dimensions: keep the first ``dimensions`` values
        (Matryoshka truncation), renormalised to unit length when the vectors are
        normalised (sentence-transformers' ``truncate_dim`` does not renormalise; cosines
        are the same either way).
        """
        recipe = self.with_pooling(pooling, hidden.shape[-1])
        hidden = hidden.float()
        mask = attention_mask
        if prompt_length and not self.include_prompt:
            mask = mask.clone()
            mask[:, :prompt_length] = 0
        vectors = torch.cat([pool_mode(hidden, mask, mode) for mode in recipe.pooling], dim=-1)
        for stage in recipe.stages:
            if isinstance(stage, DenseLayer):
                vectors = stage(vectors)
            elif normalize is None:
                vectors = F.normalize(vectors, p=2, dim=-1)
        if dimensions is not None:
            vectors = vectors[:, :dimensions]
            if normalize is None and self.normalize:
                vectors = F.normalize(vectors, p=2, dim=-1)
        if normalize:
            vectors = F.normalize(vectors, p=2, dim=-1)
        return vectors


def pool_mode(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """One sentence-transformers pooling of ``(batch, seq, hidden)`` -> ``(batch, hidden)``,
    over the positions where ``attention_mask`` is 1 (right padding)."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    if mode == "cls":  # the first unmasked token (after the prompt when it is left out)
        first = attention_mask.to(torch.int).argmax(dim=1)  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    if mode == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).amax(dim=1)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        count = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1)
        total = (hidden * mask).sum(dim=1)
        return total / (count if mode == "mean" else count.sqrt())
    if mode == "weightedmean":
        weights = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)
        weighted = mask * weights.view(1, -1, 1)  # (B, T, 1)
        return (hidden * weighted).sum(dim=1) / weighted.sum(dim=1).clamp(min=1e-9)
    if mode == "lasttoken":
        values, indices = attention_mask.flip(1).max(1)
        seq = attention_mask.shape[1]
        indices = torch.where(values == 0, seq - 1, indices)
        last = seq - indices - 1  # (B,)
        return (hidden * mask)[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling mode {mode!r}: expected one of {POOLING_MODES}")


# ----------------------------------------------------------------------------- reading
def _json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SentenceFolderError(f"{path} is not valid JSON: {error}") from None


def _kind(entry: dict, path: Path) -> str:
    """``Pooling`` for ``sentence_transformers.models.Pooling`` (and the 5.x/6.x homes)."""
    kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
    if kind not in _ST_TYPES:
        raise SentenceFolderError(
            f"{path} lists a {entry.get('type')!r} module, which distilkit does not run "
            f"(it runs {', '.join(_ST_TYPES)}): the sentence vectors would differ from "
            "sentence-transformers'"
        )
    return kind


def _pooling(folder: Path) -> tuple[tuple[str, ...], bool]:
    path = folder / "config.json"
    settings = _json(path) if path.is_file() else {}
    if not isinstance(settings, dict):
        raise SentenceFolderError(f"{path} must hold a JSON object")
    include_prompt = bool(settings.get("include_prompt", True))
    if "pooling_mode" in settings:
        modes = settings["pooling_mode"]
        modes = (modes,) if isinstance(modes, str) else tuple(modes)
    else:
        modes = tuple(mode for key, mode in _LEGACY_KEYS.items() if settings.get(key))
        modes = modes or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise SentenceFolderError(f"{path}: unknown pooling mode(s) {unknown}")
    return tuple(m for m in POOLING_MODES if m in modes), include_prompt


def _dense(folder: Path) -> DenseLayer:
    settings = _json(folder / "config.json")
    activation = settings.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in ACTIVATIONS:
        raise SentenceFolderError(
            f"{folder}: Dense activation {activation!r} is not one distilkit runs "
            f"({', '.join(a.rsplit('.', 1)[1] for a in ACTIVATIONS)})"
        )
    if settings.get("use_residual"):
        raise SentenceFolderError(f"{folder}: Dense with use_residual is not supported")
    if (folder / "model.safetensors").is_file():
        weights = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        weights = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise SentenceFolderError(f"{folder} holds a Dense module but no weights file")
    if "linear.weight" not in weights:
        raise SentenceFolderError(f"{folder}: the Dense weights lack linear.weight")
    return DenseLayer(
        weights["linear.weight"].float(), _float(weights.get("linear.bias")), activation
    )


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _float(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.float()


def read_sentence_modules(folder: str | Path) -> SentenceModules:
    """The recipe of ``folder`` (sentence-transformers' defaults when it has none)."""
    folder = Path(folder)
    modules = SentenceModules()
    settings_path = folder / "sentence_bert_config.json"
    if settings_path.is_file():
        settings = _json(settings_path)
        if isinstance(settings, dict):
            limit = settings.get("max_seq_length")
            modules.max_seq_length = limit if isinstance(limit, int) and limit > 0 else None
            modules.do_lower_case = bool(settings.get("do_lower_case", False))
    extra_path = folder / "config_sentence_transformers.json"
    if extra_path.is_file():
        extra = _json(extra_path)
        if isinstance(extra, dict):
            modules.prompts = {str(k): str(v) for k, v in (extra.get("prompts") or {}).items()}
            modules.default_prompt_name = extra.get("default_prompt_name") or None
            modules.similarity_fn_name = extra.get("similarity_fn_name") or None
            truncate_dim = extra.get("truncate_dim")
            if truncate_dim is not None and not _is_positive_int(truncate_dim):
                raise SentenceFolderError(
                    f"{extra_path}: truncate_dim must be a positive integer, got {truncate_dim!r}"
                )
            modules.truncate_dim = truncate_dim
            dims = extra.get("matryoshka_dims") or []
            if not isinstance(dims, list) or not all(_is_positive_int(d) for d in dims):
                raise SentenceFolderError(
                    f"{extra_path}: matryoshka_dims must be a list of positive integers, "
                    f"got {dims!r}"
                )
            modules.matryoshka_dims = tuple(dims)
    listing = folder / "modules.json"
    if not listing.is_file():
        return modules
    entries = _json(listing)
    if not isinstance(entries, list):
        raise SentenceFolderError(f"{listing} must hold a JSON list of modules")
    modules.from_folder = True
    seen_pooling = False
    for entry in sorted(entries, key=lambda e: e.get("idx", 0)):
        kind = _kind(entry, listing)
        path = folder / entry.get("path", "")
        if kind == "Transformer":
            if seen_pooling or entry.get("path", ""):
                raise SentenceFolderError(
                    f"{listing}: the transformer must come first and sit in the folder itself"
                )
        elif kind == "Pooling":
            modules.pooling, modules.include_prompt = _pooling(path)
            seen_pooling = True
        elif kind == "Dense":
            modules.stages.append(_dense(path))
        elif kind == "Normalize":
            modules.stages.append("normalize")
    if not seen_pooling:
        raise SentenceFolderError(f"{listing} lists no Pooling module")
    return modules


# ----------------------------------------------------------------------------- writing
def write_sentence_modules(
    folder: str | Path, modules: SentenceModules, hidden_size: int, max_seq_length: int
) -> None:
    """Write ``modules.json``, ``1_Pooling/``, Dense and Normalize folders,
    ``sentence_bert_config.json`` and ``config_sentence_transformers.json``."""
    folder = Path(folder)
    entries = [{"idx": 0, "name": "0", "path": "", "type": _PREFIX + "Transformer"}]
    _write(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": hidden_size,
            **{key: mode in modules.pooling for key, mode in _LEGACY_KEYS.items()},
            "include_prompt": modules.include_prompt,
        },
    )
    entries.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": _PREFIX + "Pooling"})
    for stage in modules.stages:
        index = len(entries)
        if isinstance(stage, DenseLayer):
            path = f"{index}_Dense"
            out_features, in_features = stage.weight.shape
            _write(
                folder / path / "config.json",
                {
                    "in_features": in_features,
                    "out_features": out_features,
                    "bias": stage.bias is not None,
                    "activation_function": stage.activation,
                },
            )
            tensors = {"linear.weight": stage.weight.contiguous()}
            if stage.bias is not None:
                tensors["linear.bias"] = stage.bias.contiguous()
            save_file(tensors, str(folder / path / "model.safetensors"))
            entries.append(
                {"idx": index, "name": str(index), "path": path, "type": _PREFIX + "Dense"}
            )
        else:
            path = f"{index}_Normalize"
            (folder / path).mkdir(parents=True, exist_ok=True)
            entries.append(
                {"idx": index, "name": str(index), "path": path, "type": _PREFIX + "Normalize"}
            )
    _write(folder / "modules.json", entries)
    _write(
        folder / "sentence_bert_config.json",
        {
            "max_seq_length": modules.max_seq_length or max_seq_length,
            "do_lower_case": modules.do_lower_case,
        },
    )
    extra: dict = {"prompts": modules.prompts, "default_prompt_name": modules.default_prompt_name}
    if modules.similarity_fn_name:
        extra["similarity_fn_name"] = modules.similarity_fn_name
    if modules.truncate_dim is not None:
        extra["truncate_dim"] = modules.truncate_dim
    if modules.matryoshka_dims:
        extra["matryoshka_dims"] = list(modules.matryoshka_dims)
    _write(folder / "config_sentence_transformers.json", extra)


def _write(path: Path, data: dict | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def lowercase_tokenizer(tokenizer) -> None:
    """Lower-case inputs before tokenizing, as sentence-transformers does for a folder with
    ``do_lower_case: true`` (unless the tokenizer lower-cases already)."""
    from tokenizers import normalizers

    if tokenizer.lowercase:
        return
    current = tokenizer.backend.normalizer
    parts = [normalizers.Lowercase()] + ([current] if current is not None else [])
    tokenizer.backend.normalizer = normalizers.Sequence(parts)
    tokenizer.lowercase = True


__all__ = [
    "POOLING_MODES",
    "DenseLayer",
    "SentenceFolderError",
    "SentenceModules",
    "lowercase_tokenizer",
    "pool_mode",
    "read_sentence_modules",
    "write_sentence_modules",
]
