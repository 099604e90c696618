"""The user-facing :class:`Encoder`: a model plus its tokenizer, with the everyday uses.

``distilkit.load(name)`` returns one. Everything here runs in inference mode and feeds
the model length-sorted batches, so short texts are not padded to long ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from distilkit.deploy.onnx_runtime import load_onnx
from distilkit.model.card import carried_facts
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.device import AUTO, resolve_device, to_device
from distilkit.model.hub import resolve
from distilkit.model.int8 import quantize_model
from distilkit.model.modeling import POOLINGS, TransformerModel
from distilkit.model.st_folder import SentenceModules, lowercase_tokenizer
from distilkit.model.static import StaticEncoder, is_static_folder, load_static
from distilkit.model.summary import model_info
from distilkit.model.tokenizer import Batch, Tokenizer
from distilkit.settings import load_json

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


DEVICE_TYPES = (AUTO, "cpu", "cuda", "meta")


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        choices = [*sorted(DTYPES), "int8"]
        raise ValueError(f"dtype must be one of {choices}, got {dtype!r}")
    return DTYPES[dtype]


class Encoder:
    """A loaded model and tokenizer. Build with :func:`distilkit.load`."""

    def __init__(
        self,
        model: TransformerModel,
        tokenizer: Tokenizer,
        folder: Path | None = None,
        name: str | None = None,
        sentence: SentenceModules | None = None,
    ):
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(
                f"the tokenizer has {tokenizer.vocab_size:,} entries but the embedding matrix has "
                f"{model.config.vocab_size:,} rows: the tokenizer must be the model's own"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.folder = folder
        self.name = name or (str(folder) if folder else "model")
        # How token vectors become a sentence vector: the folder's sentence-transformers
        # recipe (mean pooling and nothing else for a plain checkpoint).
        self.sentence = sentence or getattr(model, "sentence_modules", None) or SentenceModules()

    @property
    def config(self):
        return self.model.config

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, target: str | torch.dtype | torch.device) -> Encoder:
        """Move the model to a device (``"cuda"``, ``"cuda:1"``, ``"cpu"``, ``"auto"``: the
        GPU when there is one) or cast the weights (``"bfloat16"`` for fast CPU inference
        on AVX512-BF16/AMX, or ``"int8"``: dynamically quantized transformer blocks, CPU
        inference only; see :mod:`distilkit.int8`). Inputs follow the model's device and
        outputs come back to the host."""
        if isinstance(target, torch.device) or (
            isinstance(target, str) and target.split(":")[0] in DEVICE_TYPES
        ):
            device = resolve_device(target)
            if device.type != "cpu" and self._is_int8():
                raise ValueError("int8 blocks run on the CPU only: use bfloat16 on a GPU")
            self.model.to(device)
            return self
        if target == "int8":
            if self.device.type != "cpu":
                raise ValueError("int8 blocks run on the CPU only: use bfloat16 on a GPU")
            self.model = quantize_model(self.model)
            self._int8 = True
            return self
        self.model.to(_dtype(target))
        return self

    def _is_int8(self) -> bool:
        return getattr(self, "_int8", False)

    def _inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """A tokenized batch's model inputs on the model's device."""
        return to_device(batch.model_inputs(), self.device)

    # ------------------------------------------------------------------ encoding
    def _batches(
        self, texts: Sequence[str], batch_size: int, max_length: int | None, progress: bool | None
    ) -> Iterator[tuple[np.ndarray, Batch]]:
        """Length-sorted batches; yields (original indices, batch)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        lengths = [len(t) for t in texts]
        order = np.argsort([-n for n in lengths], kind="stable")
        starts = range(0, len(texts), batch_size)
        show = progress if progress is not None else len(texts) > 20 * batch_size
        for start in tqdm(starts, desc="encoding", unit="batch", disable=not show):
            indices = order[start : start + batch_size]
            chunk = [texts[i] for i in indices]
            yield indices, self.tokenizer(chunk, max_length=max_length, alignment=False)

    @torch.inference_mode()
    def embed(
        self,
        texts: str | Sequence[str],
        pooling: str | None = None,
        normalize: bool | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        progress: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        dimensions: int | None = None,
    ) -> np.ndarray:
        """Sentence embeddings, ``(n, dim)`` float32, as sentence-transformers' ``encode``.

        pooling None follows the model's own recipe (its sentence-transformers pooling,
        Dense layers and Normalize; mean pooling for a plain checkpoint); mean | cls |
        max | last replaces only the pooling step, and the Dense layers and Normalize
        still follow (a ValueError when a Dense layer takes another width). normalize
        None follows the recipe's Normalize module; True or False overrides it. prompt_name
        (one of the model's prompts) or prompt (a text) is put before every text.
        dimensions: keep the first ``dimensions`` values of each vector (a Matryoshka-
        trained model's ``matryoshka_dims`` keep most), renormalised when the vectors
        are normalised; None: the folder's ``truncate_dim``, else the whole vector.
        """
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        prefix = self.sentence.prompt(prompt_name, prompt)
        prompt_length = None
        if prefix:
            texts = [prefix + text for text in texts]
            # sentence-transformers' count: the prompt's tokens with [CLS], without [SEP]
            prompt_length = int(self.tokenizer([prefix]).attention_mask.sum()) - 1
        hidden = self.config.hidden_size
        full = self.sentence.with_pooling(pooling, hidden).output_dim(hidden)  # checks it fits
        dim = self.sentence.cut_width(full, dimensions)
        cut = None if dim == full else dim
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for indices, batch in self._batches(texts, batch_size, max_length, progress):
            out[indices] = self.embed_batch(batch, pooling, normalize, prompt_length, cut).numpy()
        return out

    @torch.inference_mode()
    def embed_batch(
        self,
        batch: Batch,
        pooling: str | None = None,
        normalize: bool | None = None,
        prompt_length: int | None = None,
        dimensions: int | None = None,
    ) -> torch.Tensor:
        """Sentence embeddings of one tokenized batch, ``(batch, dim)`` float32 tensor.

        The model step of :meth:`embed`, for callers (and benchmarks) that tokenize
        themselves; ``dimensions`` truncates as :meth:`embed` does (None: no cut here).
        """
        inputs = self._inputs(batch)
        encoded = self.model.backbone(
            inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]
        )
        vectors = self.sentence.encode(
            encoded.last_hidden_state,
            inputs["attention_mask"],
            pooling,
            normalize,
            prompt_length,
            dimensions,
        )
        return vectors.cpu()

    def describe_recipe(self, pooling: str | None = None) -> str:
        """The model's own way to a sentence vector, in words (``mean pooling, normalized``);
        ``pooling``: with that pooling step instead (as :meth:`embed` runs it)."""
        recipe = self.sentence.with_pooling(pooling, self.config.hidden_size)
        steps = ["+".join(recipe.pooling) + " pooling"]
        steps += ["dense" if not isinstance(s, str) else "normalized" for s in recipe.stages]
        return ", ".join(steps)

    def similarity(
        self, a: str | Sequence[str] | np.ndarray, b: str | Sequence[str] | np.ndarray
    ) -> np.ndarray:
        """Similarity of every ``a`` to every ``b``, ``(len(a), len(b))`` float32.

        Texts are embedded with :meth:`embed`; arrays ``(n, dim)`` are taken as vectors.
        The function is the model's own (sentence-transformers' ``similarity_fn_name``):
        cosine by default, or dot, or minus the euclidean or manhattan distance.
        """
        left, right = (
            np.atleast_2d(x).astype(np.float32) if isinstance(x, np.ndarray) else self.embed(x)
            for x in (a, b)
        )
        kind = self.sentence.similarity_fn_name or "cosine"
        if kind == "cosine":
            left = left / np.clip(np.linalg.norm(left, axis=1, keepdims=True), 1e-12, None)
            right = right / np.clip(np.linalg.norm(right, axis=1, keepdims=True), 1e-12, None)
            return left @ right.T
        if kind == "dot":
            return left @ right.T
        if kind == "euclidean":
            return -np.linalg.norm(left[:, None] - right[None], axis=-1)
        if kind == "manhattan":
            return -np.abs(left[:, None] - right[None]).sum(-1)
        raise ValueError(
            f"similarity function {kind!r} (config_sentence_transformers.json) is not one of "
            "cosine, dot, euclidean, manhattan"
        )

    @torch.inference_mode()
    def features(
        self, texts: str | Sequence[str], layer: int = -1
    ) -> np.ndarray | list[np.ndarray]:
        """Token vectors, ``(tokens, hidden)`` including [CLS] and [SEP], of one text; for a
        list of texts, one such array per text (each its own length, no padding).

        ``layer`` picks a hidden state (0 = embeddings output, -1 = last layer).
        """
        states = self.config.num_layers + 1
        if not -states <= layer < states:
            raise ValueError(
                f"layer must be in [-{states}, {states - 1}] for this "
                f"{self.config.num_layers}-layer model (0 = embeddings output, -1 = last layer), "
                f"got {layer}"
            )
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        out: list[np.ndarray] = [np.zeros((0, self.config.hidden_size), np.float32)] * len(texts)
        for indices, batch in self._batches(texts, 64, None, False):
            inputs = self._inputs(batch)
            encoded = self.model.backbone(**inputs, output_hidden_states=layer != -1)
            hidden = encoded.last_hidden_state if layer == -1 else encoded.hidden_states[layer]
            lengths = batch.attention_mask.sum(1).tolist()
            for row, (index, length) in enumerate(zip(indices, lengths, strict=True)):
                out[index] = hidden[row, :length].float().cpu().numpy()
        return out[0] if single else out

    @torch.inference_mode()
    def attentions(self, text: str) -> np.ndarray:
        """Attention maps of one text, ``(layers, heads, tokens, tokens)`` float32: row i of
        a map is how token i spreads its attention over the tokens (each row sums to 1).
        The tokens are :meth:`tokens` (text)."""
        batch = self.tokenizer([text])
        encoded = self.model.backbone(**self._inputs(batch), output_attentions=True)
        return torch.stack(encoded.attentions)[:, 0].float().cpu().numpy()

    def tokens(self, text: str) -> list[str]:
        """The word pieces the model sees for ``text``, with [CLS] and [SEP]."""
        return self.tokenizer.convert_ids_to_tokens(self.tokenizer([text]).input_ids[0].tolist())

    @torch.inference_mode()
    def fill_mask(self, text: str, top_k: int = 5) -> list[dict] | list[list[dict]]:
        """Top-k tokens for the mask in ``text``, as `transformers`' fill-mask pipeline
        returns them: ``[{"score", "token" (id), "token_str", "sequence"}, ...]``, most
        likely first; ``sequence`` is the text with that token in the mask's place.

        With several masks, one such list per mask, in order (the other masks are then
        kept in each ``sequence``, as the pipeline does).
        """
        if self.config.head != "masked_lm":
            raise ValueError(
                f"{self.name} has no masked-LM head, so it cannot fill masks: use a checkpoint "
                "with an MLM head, or fit one with `distilkit fit-mlm-head`"
            )
        batch = self.tokenizer([text])
        input_ids = batch.input_ids[0]
        positions = (input_ids == self.tokenizer.mask_id).nonzero().squeeze(1)
        if positions.numel() == 0:
            self._no_mask_error(text, batch.truncated[0])
        output = self.model(**self._inputs(batch))
        probabilities = output.logits[0, positions.to(self.device)].float().softmax(-1).cpu()
        # Embedding matrices are often padded past the vocabulary: rank real tokens only.
        probabilities = probabilities[:, : self.tokenizer.vocab_size]
        scores, ids = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
        single = len(positions) == 1
        results = []
        for position, row_ids, row_scores in zip(positions, ids, scores, strict=True):
            row = []
            for token_id, score in zip(row_ids.tolist(), row_scores.tolist(), strict=True):
                filled = input_ids.clone()
                filled[position] = token_id
                sequence = self.tokenizer.decode(filled.tolist(), skip_special_tokens=single)
                row.append(
                    {
                        "score": float(score),
                        "token": int(token_id),
                        "token_str": self.tokenizer.decode([token_id], skip_special_tokens=False),
                        "sequence": sequence,
                    }
                )
            results.append(row)
        return results[0] if single else results

    def _no_mask_error(self, text: str, truncated: bool) -> None:
        """Why ``text`` has no mask to fill: none written, or one cut off by truncation."""
        mask = self.tokenizer.mask_token
        if truncated and self.tokenizer.mask_id in self.tokenizer.encode_ids([text])[0]:
            limit = self.tokenizer.max_length
            raise ValueError(
                f"the {mask} was cut off by truncation at {limit} tokens (the most the model "
                f"reads): shorten the text, or move the {mask} nearer its start"
            )
        raise ValueError(f"the text has no {mask} token to fill: {text!r}")

    @torch.inference_mode()
    def logits(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, batch_size: int = 64
    ) -> np.ndarray:
        """Head outputs for a sequence-classification model, ``(n, num_labels)``."""
        if self.config.head != "sequence_classification":
            raise ValueError(f"{self.name} has no sequence-classification head")
        texts = list(texts)
        out = np.zeros((len(texts), self.config.num_labels), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[start : start + batch_size],
                None if pairs is None else list(pairs[start : start + batch_size]),
                alignment=False,
            )
            out[start : start + len(batch)] = (
                self.model(**self._inputs(batch)).logits.float().cpu().numpy()
            )
        return out

    # ------------------------------------------------------------------ inspection and I/O
    def info(self) -> dict:
        """Parameter counts per array, total, layer-type counts, size on disk."""
        return model_info(self.model, self.folder)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a Hugging Face folder (config.json, model.safetensors, tokenizer files,
        the sentence-transformers files) with a model card: the card of the folder it was
        loaded from when distilkit wrote one (teacher, steps, quality table kept; shape and
        recipe refreshed), else one that records where it was loaded from."""
        card = carried_facts(self.folder, self.name, path)
        return save_model(
            self.model, path, tokenizer=self.tokenizer, sentence=self.sentence, card=card
        )

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Encoder({self.name!r}, layout={c.layout}, layers={c.num_layers}, "
            f"hidden={c.hidden_size}, head={c.head}, dtype={str(self.dtype).replace('torch.', '')})"
        )


def _token_limit(folder: Path, model: TransformerModel) -> int:
    """The position count, or sentence-transformers' ``max_seq_length`` when the folder
    has one (all-MiniLM-L6-v2 reads 256 tokens, not 512)."""
    limit = model.config.max_tokens
    settings = folder / "sentence_bert_config.json"
    if settings.is_file():
        value = load_json(settings).get("max_seq_length")
        if isinstance(value, int) and 0 < value < limit:
            limit = value
    return limit


def load(
    name: str | os.PathLike = "all-MiniLM-L6-v2",
    dtype: str | torch.dtype | None = None,
    head: str | bool | None = True,
    num_labels: int | None = None,
    label_names: list[str] | None = None,
    device: str | torch.device | None = AUTO,
) -> Encoder | StaticEncoder:
    """Load a model by name: a checkpoint folder, the embedded ``all-MiniLM-L6-v2``, or a Hub id.

    A sentence-transformers folder whose input is a ``StaticEmbedding`` (``distilkit
    distill-static``, model2vec) loads as a :class:`~distilkit.model.static.StaticEncoder`.

    dtype: ``"float32"`` (default), ``"bfloat16"``, or ``"int8"`` (int8 transformer blocks
    for CPU inference, :mod:`distilkit.int8`). head: ``True`` keeps the
    checkpoint's head, a head name attaches that head, ``None`` drops it. device:
    ``"auto"`` (the GPU when there is one; int8 stays on the CPU), ``"cpu"``, ``"cuda"``,
    ``"cuda:1"``.
    """
    if str(name).endswith(".onnx"):  # an exported model, run by onnxruntime
        if device not in (None, AUTO) and resolve_device(device).type != "cpu":
            raise ValueError(f"{name} is an ONNX file, run by onnxruntime on the CPU: drop device")
        if dtype not in (None, "float32", torch.float32):
            raise ValueError(
                f"dtype {dtype!r} applies to transformer checkpoints; {name} is an ONNX file, "
                "whose precision was fixed at export (`distilkit export --int8`): drop dtype"
            )
        return load_onnx(name)
    if Path(name).expanduser().is_dir() and is_static_folder(Path(name).expanduser()):
        if dtype not in (None, "float32", torch.float32):
            raise ValueError(f"{name} is a static model (a float32 table): drop dtype {dtype!r}")
        return load_static(Path(name).expanduser(), name=str(name))
    folder = resolve(name)
    model = load_model(folder, head=head, num_labels=num_labels, label_names=label_names)
    tokenizer = Tokenizer.from_folder(folder, max_length=_token_limit(folder, model))
    sentence = getattr(model, "sentence_modules", None) or SentenceModules()
    if sentence.do_lower_case:
        lowercase_tokenizer(tokenizer)
    encoder = Encoder(model, tokenizer, folder=folder, name=str(name), sentence=sentence)
    if dtype == "int8":
        if device not in (None, AUTO) and resolve_device(device).type != "cpu":
            raise ValueError("dtype int8 runs on the CPU only: use bfloat16 on a GPU")
    else:
        encoder.to(resolve_device(device))
    if dtype is not None:
        encoder.to(dtype)
    return encoder
