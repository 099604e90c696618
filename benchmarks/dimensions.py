"""Quality per dimension: plain truncation, PCA projection and Matryoshka training.

For each width in ``--dims`` (default 384,256,128,64) the quick dev suite (STS-B dev
Spearman and five more tasks, retention against the teacher's whole vectors) scores:

* ``truncation``: the first d values of a model's sentence vector, renormalised
  (``Encoder.embed(dimensions=d)``);
* ``PCA (distilkit)``: the vector projected on the top d principal components, fitted on
  ``--pca-sentences`` sentences of ``--pca-corpus`` (never on evaluation data), centred,
  as the saved Dense module ``model.pca.pca_dense`` placed before the Normalize;
* ``PCA (sentence-transformers recipe)``: sentence-transformers' documented dimension
  reduction (``examples/.../dimensionality_reduction.py``): scikit-learn's PCA fitted on
  the normalised embeddings of the same corpus sentences, its components appended as a
  ``Dense(bias=False, Identity)`` after the Normalize, no centring, no renormalisation;
* ``Matryoshka truncation``: truncation of a student trained with ``distill --matryoshka``.

Every model embeds the suite's sentences once (whole vectors before the Normalize,
cached under ``--work``); each route is computed from those in numpy, after checking on
200 sentences that the route equals the library path it stands for (``embed(dimensions=)``,
an encoder carrying the PCA Dense module, sentence-transformers with its Dense appended).

    python benchmarks/dimensions.py --student runs/base/student --matryoshka runs/mat/student
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from distilkit.deploy.onnx_runtime import normalize_rows as unit
from distilkit.encoder import Encoder, load
from distilkit.evaluate.suite import QUICK, add_retention, load_suite_data, score_vectors
from distilkit.methods.general.config import DEMO_CORPUS
from distilkit.methods.static.vocab import corpus_sentences
from distilkit.model.hub import resolve
from distilkit.model.pca import PCA, fit_pca, pca_dense, with_projection

CHECK_SENTENCES = 200


def raw_vectors(encoder: Encoder, texts: list[str], work: Path, name: str) -> np.ndarray:
    """``(n, dim)`` sentence vectors before the Normalize, cached by model and texts."""
    key = hashlib.sha256(json.dumps([str(encoder.folder), texts]).encode("utf-8")).hexdigest()[:16]
    path = work / f"{name.replace('/', '_').replace(' ', '_')}-{key}.npy"
    if path.is_file():
        return np.load(path)
    start = time.perf_counter()
    vectors = encoder.embed(texts, normalize=False, progress=False)
    print(f"{name}: embedded {len(texts):,} sentences in {time.perf_counter() - start:.0f} s")
    work.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def st_pca_components(normalised: np.ndarray, dims: int) -> np.ndarray:
    """scikit-learn's PCA components ``(dims, dim)`` as sentence-transformers' example fits
    them (on normalised embeddings)."""
    from sklearn.decomposition import PCA as SklearnPCA

    return SklearnPCA(n_components=dims).fit(normalised).components_.astype(np.float32)


def check_routes(
    encoder: Encoder, texts: list[str], raw: np.ndarray, pca: PCA, st_components: np.ndarray
) -> dict[str, float]:
    """Largest difference between each numpy route and the library path it stands for."""
    d = min(64, pca.components.shape[0])
    checks = {
        "truncation vs embed(dimensions=)": np.abs(
            unit(raw[:, :d]) - encoder.embed(texts, dimensions=d, progress=False)
        ).max()
    }
    projected = Encoder(encoder.model, encoder.tokenizer, encoder.folder, sentence=encoder.sentence)
    reduced = PCA(pca.mean, pca.components[:d], pca.explained_variance_ratio[:d])
    projected.sentence = with_projection(encoder.sentence, pca_dense(reduced))
    checks["PCA vs the saved Dense module"] = np.abs(
        unit(pca.transform(raw)[:, :d]) - projected.embed(texts, progress=False)
    ).max()
    try:
        from sentence_transformers import SentenceTransformer, models
    except ImportError:
        print("sentence-transformers is not installed: its PCA route is computed, not run")
        return {k: float(v) for k, v in checks.items()}
    model = SentenceTransformer(str(encoder.folder), device="cpu")
    dense = models.Dense(
        st_components.shape[1], d, bias=False, activation_function=torch.nn.Identity()
    )
    dense.linear.weight = torch.nn.Parameter(torch.from_numpy(st_components[:d].copy()))
    model.add_module("dense", dense)
    theirs = model.encode(texts, convert_to_numpy=True)
    checks["sentence-transformers PCA vs SentenceTransformer + Dense"] = np.abs(
        unit(raw) @ st_components[:d].T - theirs
    ).max()
    return {k: float(v) for k, v in checks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2")
    parser.add_argument("--student", required=True, help="a student trained without --matryoshka")
    parser.add_argument("--matryoshka", help="a student trained with --matryoshka")
    parser.add_argument("--dims", default="384,256,128,64")
    parser.add_argument("--pca-corpus", nargs="+", default=[str(DEMO_CORPUS)])
    parser.add_argument("--pca-sentences", type=int, default=4000)
    parser.add_argument("--work", default="runs/dimensions-bench", help="cache of vectors")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dims = [int(d) for d in args.dims.split(",")]
    work = Path(args.work)
    data = load_suite_data(QUICK)
    texts = data.texts()
    # PCA text: the first sentences of the corpus, skipping any that the suite scores
    scored = set(texts)
    fit_texts = [s for s in corpus_sentences(args.pca_corpus, 2 * args.pca_sentences)]
    fit_texts = [s for s in fit_texts if s not in scored][: args.pca_sentences]
    print(f"suite: {len(texts):,} sentences; PCA fitted on {len(fit_texts):,} corpus sentences")

    models = {"teacher": resolve(args.teacher), "student": args.student}
    if args.matryoshka:
        models["Matryoshka student"] = args.matryoshka
    rows: list[dict] = []
    checks: dict[str, dict[str, float]] = {}
    reference: dict | None = None
    for name, folder in models.items():
        encoder = load(folder)
        raw = raw_vectors(encoder, texts, work, name)
        routes = {"truncation": lambda d, raw=raw: unit(raw[:, :d])}
        if name != "Matryoshka student":  # PCA routes for the teacher and the plain student
            fit_raw = raw_vectors(encoder, fit_texts, work, f"{name}-pca-fit")
            pca = fit_pca(fit_raw, max(dims))
            st_components = st_pca_components(unit(fit_raw), max(dims))
            routes["PCA (distilkit)"] = lambda d, raw=raw, pca=pca: unit(pca.transform(raw)[:, :d])
            routes["PCA (sentence-transformers recipe)"] = lambda d, raw=raw, c=st_components: (
                unit(raw) @ c[:d].T
            )
            checks[name] = check_routes(
                encoder, texts[:CHECK_SENTENCES], raw[:CHECK_SENTENCES], pca, st_components
            )
            print(f"{name}: {checks[name]}")
        if reference is None:  # the teacher's whole vectors, as its recipe gives them
            reference = {
                "name": "teacher, whole",
                "scores": score_vectors(dict(zip(texts, unit(raw), strict=True)), data, QUICK),
            }
        for route, project in routes.items():
            for d in dims:
                start = time.perf_counter()
                vectors = dict(zip(texts, project(d), strict=True))
                row = {"name": f"{name} | {route} | {d}", "model": name, "route": route, "dims": d}
                row["scores"] = score_vectors(vectors, data, QUICK)
                rows.append(row)
                print(
                    f"{row['name']}: STS-B {row['scores']['STS-B']:.2f} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    rows = add_retention([reference, *rows])[1:]
    print()
    print("| model | route | dims | STS-B dev Spearman | mean retention % (quick suite) |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | {row['route']} | {row['dims']} | "
            f"{row['scores']['STS-B']:.2f} | {row['mean_retention']:.2f} |"
        )
    print(f"threads {torch.get_num_threads()}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "checks": checks, "reference": reference}, indent=2) + "\n",
            "utf-8",
        )


if __name__ == "__main__":
    main()
