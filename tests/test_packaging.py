"""Each install suffices for its commands (issue 18, defect 11): the core install runs
`distill` without seqeval, an optional dependency is imported where used with an error
naming its extra, and `pip install .[export]` in a fresh venv can export (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = [  # every third-party module of an extra (pyproject.toml)
    "seqeval",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "fastapi",
    "uvicorn",
    "prometheus_client",
    "transformers",
    "sentence_transformers",
    "huggingface_hub",
]
# Python run with the optional modules made unimportable, as in a core-only install
BLOCKED = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Blocker())
{body}
"""


def run_blocked(body: str, blocked: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", BLOCKED.format(blocked=set(blocked), body=body)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_the_core_install_loads_every_command_and_method():
    body = (
        "import pkgutil, importlib, distilkit\n"
        "for module in pkgutil.walk_packages(distilkit.__path__, 'distilkit.'):\n"
        "    if module.name.split('.')[1] in ('cli', 'methods', 'tasks', 'train', 'data'):\n"
        "        importlib.import_module(module.name)\n"
        "from distilkit.cli.main import main\n"
        "sys.exit(main(['distill', '--help']))\n"
    )
    done = run_blocked(body, OPTIONAL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--time-budget" in done.stdout


def test_entity_f1_without_seqeval_names_the_extra():
    body = (
        "from distilkit.tasks.metrics import entity_f1\n"
        "try:\n"
        "    entity_f1([['B-PER']], [['B-PER']])\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    done = run_blocked(body, ["seqeval"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pip install 'distilkit[eval]'" in done.stdout


@pytest.mark.slow
def test_the_export_extra_in_a_fresh_venv_exports(tmp_path):
    """A real fresh venv (no --system-site-packages): torch, then `pip install .[export]`."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    torch_version = __import__("torch").__version__.split("+")[0]
    subprocess.run([*pip, f"torch=={torch_version}"], check=True, timeout=1800)
    subprocess.run([*pip, f"{ROOT}[export]"], check=True, timeout=1800)
    teacher = tmp_path / "tiny"
    make = (
        "from distilkit.model.config import ModelConfig\n"
        "from distilkit.model.modeling import TransformerModel\n"
        "from distilkit.model.checkpoint import save_model\n"
        "from distilkit.model.tokenizer import Tokenizer\n"
        "from pathlib import Path\n"
        "import sys\n"
        "folder = Path(sys.argv[1]); vocab = folder.with_name('vocab.txt')\n"
        "words = ['[PAD]','[UNK]','[CLS]','[SEP]','[MASK]','a','b','c']\n"
        "vocab.write_text(''.join(w + chr(10) for w in words))\n"
        "config = ModelConfig(vocab_size=8, hidden_size=12, num_layers=1, num_heads=2,\n"
        "                     intermediate_size=20, max_position_embeddings=16)\n"
        "save_model(TransformerModel(config), folder,\n"
        "           tokenizer=Tokenizer.from_vocab(vocab))\n"
    )
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([python, "-c", make, str(teacher)], check=True, env=env, cwd=tmp_path)
    done = subprocess.run(
        [str(venv / "bin" / "distilkit"), "export", str(teacher), "--onnx", "tiny.onnx"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "tiny.onnx").is_file()
