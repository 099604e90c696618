"""The "Use" section of a model card: one code block per library that reads the folder
(distilkit always; sentence-transformers and transformers for transformer sentence
encoders, sentence-transformers and model2vec for static tables, transformers' pipeline for
task heads). ``facts`` is a :class:`~distilkit.model.card.CardFacts`; ``PATH`` stands for
the folder.
"""

from __future__ import annotations


def _transformers_pooling(facts) -> list[str]:
    lines = [
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
    elif facts.pooling == "max":
        lines += [
            'mask = batch["attention_mask"].unsqueeze(-1)',
            "vectors = tokens.masked_fill(mask == 0, -1e9).max(1).values",
        ]
    else:
        return [*lines, f"# then {facts.pooling} pooling, as 1_Pooling/config.json says"]
    if facts.dense:
        lines.append("# the Dense layer after pooling is sentence-transformers' own (2_Dense/)")
    if facts.normalize:
        lines.append("vectors = torch.nn.functional.normalize(vectors, dim=-1)")
    return lines


def _block(title: str, code: list[str]) -> list[str]:
    return [title, "", "```python", *code, "```", ""]


def fills_masks(facts) -> bool:
    """Whether the card's model keeps a masked-LM head beside its sentence recipe."""
    return facts.kind == "sentence" and (facts.architecture or "").endswith("ForMaskedLM")


def usage(facts) -> list[str]:
    """The "Use" section: one code block per library that reads the folder."""
    texts = '["A sentence.", "Another one."]'
    if facts.kind in ("sentence", "static"):
        blocks = _block(
            "distilkit:",
            [
                "import distilkit",
                "",
                'model = distilkit.load("PATH")',
                f"vectors = model.embed({texts})  # the folder's own pooling and normalisation",
            ],
        )
        blocks += _block(
            "sentence-transformers (the same vectors"
            + (", a `StaticEmbedding` module" if facts.kind == "static" else "")
            + "):",
            [
                "from sentence_transformers import SentenceTransformer",
                "",
                'model = SentenceTransformer("PATH")',
                f"vectors = model.encode({texts})",
            ],
        )
        if facts.kind == "static":
            normalize = ", normalize=True" if facts.normalize else ""
            blocks += _block(
                "model2vec (the same vectors):",
                [
                    "from model2vec import StaticModel",
                    "",
                    f'model = StaticModel.from_pretrained("PATH"{normalize})',
                    f"vectors = model.encode({texts})",
                ],
            )
        else:
            blocks += _block(
                "transformers (token vectors; pool them yourself):", _transformers_pooling(facts)
            )
        if fills_masks(facts):
            mask = "<mask>" if "Roberta" in (facts.architecture or "") else "[MASK]"
            blocks += _block(
                "It keeps its masked-language-model head, so it also fills in masked words:",
                [
                    "import distilkit",
                    "from transformers import pipeline",
                    "",
                    f'distilkit.load("PATH").fill_mask("Paris is the {mask} of France.")',
                    f'pipeline("fill-mask", model="PATH")("Paris is the {mask} of France.")',
                ],
            )
        return blocks
    calls = {
        "sequence_classification": (
            f'from distilkit.deploy.pipelines import classify\n\nclassify("PATH", {texts})',
            f'pipeline("text-classification", model="PATH")({texts})',
        ),
        "token_classification": (
            'from distilkit.deploy.pipelines import ner\n\nner("PATH", "Ada Lovelace lived '
            'in London.")',
            'pipeline("token-classification", model="PATH", aggregation_strategy="first")'
            '("Ada Lovelace lived in London.")',
        ),
        "question_answering": (
            'from distilkit.deploy.pipelines import answer\n\nanswer("PATH", "Where?", '
            '"It lives in Paris.")',
            'pipeline("question-answering", model="PATH")(question="Where?", '
            'context="It lives in Paris.")',
        ),
        "bilstm": (
            f'from distilkit.deploy.pipelines import classify\n\nclassify("PATH", {texts})',
            None,
        ),
        "seq2seq": (
            f'from distilkit.methods.cmlm import generate\n\ngenerate("PATH", {texts})',
            None,
        ),
    }
    ours, theirs = calls[facts.kind]
    blocks = _block("distilkit:", ours.split("\n"))
    if theirs is not None:
        blocks += _block("transformers:", ["from transformers import pipeline", "", theirs])
    return blocks
