"""C-MLM (Chen et al., 2020): a BERT teacher, fine-tuned as a conditional MLM, distilled into a
seq2seq generator."""

from distilkit.methods.cmlm.job import CMLMConfig, Config, generate, run

__all__ = ["CMLMConfig", "Config", "generate", "run"]
