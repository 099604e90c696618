"""A 3-layer student cut from the embedded all-MiniLM-L6-v2, saved by distilkit and loaded
by sentence-transformers: prints the largest difference of the vectors and their norms."""

import tempfile
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer

import distilkit
from distilkit.model.checkpoint import save_model
from distilkit.model.student import build_student

texts = ["A man is playing a guitar.", "The cat sleeps.", "Distillation makes it small."]
enc = distilkit.load("all-MiniLM-L6-v2")
d = Path(tempfile.mkdtemp())
student, _ = build_student(enc.model, layers=[0, 2, 5])
out = save_model(student, d / "student", tokenizer=enc.tokenizer)
st = SentenceTransformer(str(out), device="cpu")
theirs = st.encode(texts)
ours = distilkit.load(out).embed(texts)
print(
    "max |ST - distilkit|",
    float(np.abs(theirs - ours).max()),
    "ST norms",
    np.linalg.norm(theirs, axis=1).round(6).tolist(),
    "max_seq_length",
    st.max_seq_length,
)
