"""Generation metrics: corpus BLEU (sacrebleu) and ROUGE-L F1 (rouge-score), in percent."""

from __future__ import annotations

from collections.abc import Sequence


def generation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``bleu`` (sacrebleu's corpus BLEU, 13a tokenisation), ``rouge_l`` (mean ROUGE-L F1
    over pairs, stemmed) and ``exact_match`` (lower-cased, whitespace-normalised), each 0-100.
    """
    try:
        import sacrebleu
        from rouge_score import rouge_scorer
    except ImportError as error:  # an optional extra
        raise ImportError(
            f"generation metrics need sacrebleu and rouge-score ({error.name} is missing): "
            "pip install 'distilkit[generation]'"
        ) from None
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("there are no references to score against")
    bleu = sacrebleu.corpus_bleu(list(predictions), [list(references)]).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [
        scorer.score(ref, pred)["rougeL"].fmeasure
        for pred, ref in zip(predictions, references, strict=True)
    ]

    def norm(text: str) -> str:
        return " ".join(text.lower().split())

    exact = [norm(p) == norm(r) for p, r in zip(predictions, references, strict=True)]
    return {
        "bleu": float(bleu),
        "rouge_l": 100.0 * sum(rouge) / len(rouge),
        "exact_match": 100.0 * sum(exact) / len(exact),
    }


__all__ = ["generation_metrics"]
