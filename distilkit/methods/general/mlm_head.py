"""``fit-mlm-head``: give a teacher without one a masked-LM head, trained on a corpus."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from distilkit.data.corpus import CorpusSettings, build_corpus
from distilkit.methods.general.config import DEMO_CORPUS
from distilkit.methods.general.job import check_max_len, corpus_trainer
from distilkit.methods.general.objectives import MaskedLMFitting
from distilkit.model.checkpoint import load_model, save_model
from distilkit.model.hub import DEFAULT_MODEL, resolve
from distilkit.model.tokenizer import Tokenizer
from distilkit.settings import build_nested, save_json, to_dict
from distilkit.train import distributed
from distilkit.train.distributed import say
from distilkit.train.run_folder import guarded_run
from distilkit.train.trainer import TrainingConfig


# --------------------------------------------------------------------------- fit-mlm-head
@dataclass
class MLMHeadConfig:
    """Fitting a masked-LM head to a teacher that has none (saved with the result)."""

    teacher: str = DEFAULT_MODEL
    corpus: list[str] = field(default_factory=lambda: [str(DEMO_CORPUS)])
    train_layers: int = 0  # top transformer blocks unfrozen along with the head
    max_len: int = 128
    heldout_fraction: float = 0.02
    training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(
            max_steps=1000,
            batch_size=32,
            learning_rate=1e-3,
            eval_every=100,
            checkpoint_every=100,
            warmup_fraction=0.02,
        )
    )

    def __post_init__(self) -> None:
        build_nested(self)


@guarded_run
def fit_mlm_head(config: MLMHeadConfig, out_dir: str | Path, resume: bool = True) -> dict:
    """Give the teacher a masked-LM head (decoder tied to its word embeddings) and train it
    (and optionally its top ``train_layers`` blocks) on the corpus; report held-out masked
    token accuracy and loss before and after. The result folder is a teacher for
    ``distill`` with the full triple loss."""

    distributed.init_from_env(config.training.device)
    out_dir = Path(out_dir)
    folder = resolve(config.teacher)
    model = load_model(folder, head="masked_lm")
    check_max_len(config.max_len, model)
    tokenizer = Tokenizer.from_folder(folder, max_length=config.max_len)
    corpus = build_corpus(config.corpus, tokenizer, CorpusSettings(max_len=config.max_len))
    train_set, heldout = corpus.split(config.heldout_fraction, seed=config.training.seed)
    if "head.bias" in getattr(model, "new_parameters", []):
        # Start the output bias at the log unigram frequency: the head begins at the
        # unigram model instead of uniform, and learns the contextual part from there.
        counts = torch.from_numpy(train_set.token_counts(tokenizer.vocab_size)).double()
        with torch.no_grad():
            model.head.bias.copy_(torch.log((counts + 1) / (counts.sum() + len(counts))).float())
    objective = MaskedLMFitting(model, tokenizer, train_layers=config.train_layers)
    trainer = corpus_trainer(
        objective,
        train_set,
        heldout,
        tokenizer,
        config.training,
        out_dir,
        {"fit_mlm_head": to_dict(config)},
    )
    before = trainer.evaluate()
    say(
        f"held-out masked-token accuracy before: {before.get('eval/mlm_accuracy', 0):.2%} "
        f"(loss {before.get('eval/mlm_loss', float('nan')):.3f})"
    )
    result = trainer.run(resume=resume)
    after = trainer.evaluate()
    say(
        f"held-out masked-token accuracy after {result.step} steps: "
        f"{after['eval/mlm_accuracy']:.2%} (loss {after['eval/mlm_loss']:.3f})"
    )
    metrics = {
        "before": before,
        "after": after,
        "steps": result.step,
        "seconds": result.elapsed,
        "train_layers": config.train_layers,
    }
    if distributed.rank() == 0:
        teacher_dir = out_dir / "teacher"
        save_model(model, teacher_dir, tokenizer=Tokenizer.from_folder(folder), source=folder)
        save_json(metrics, out_dir / "metrics.json")
        say(f"teacher with masked-LM head saved to {teacher_dir}")
    return metrics
