"""ModelConfig validation, strict JSON (unknown keys and wrong types are errors), and the
conversion to and from `transformers`' config.json for the bert and distilbert layouts."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from distilkit.model.config import ModelConfig
from distilkit.settings import ConfigError, from_dict, load_json, save_json, to_dict

DISTILBERT = {"layout": "distilbert", "type_vocab_size": 0, "with_pooler": False}


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden_size": 30}, "hidden_size 30 is not divisible by num_heads 4"),
        ({"num_layers": 0}, "num_layers must be a positive integer, got 0"),
        ({"vocab_size": -5}, "vocab_size must be a positive integer"),
        ({"layout": "roberta"}, "layout must be one of"),
        ({"layout": "distilbert"}, "no token-type embeddings and no pooler"),
        ({"hidden_act": "swish"}, "hidden_act must be one of"),
        ({"head": "ner"}, "head must be one of"),
        ({"problem_type": "ranking"}, "unknown problem_type 'ranking'"),
        ({"label_names": ["a", "b", "c"]}, "label_names has 3 names but num_labels is 2"),
        ({"pad_token_id": 99}, "pad_token_id 99 is outside the vocabulary"),
    ],
)
def test_invalid_model_configs_name_the_field(
    tiny_config: ModelConfig, changes: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(tiny_config, **changes)


def test_head_dim(tiny_config: ModelConfig) -> None:
    assert tiny_config.head_dim == 8


# ----------------------------------------------------------------------------- strict JSON
def test_from_dict_rejects_an_unknown_key_by_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) hidden_sise for ModelConfig") as e:
        from_dict(ModelConfig, {"hidden_size": 32, "num_heads": 4, "hidden_sise": 64})
    assert "valid options: " in str(e.value) and "hidden_size" in str(e.value)


@dataclass
class Inner:
    rate: float = 0.1
    steps: int = 3


@dataclass
class Outer:
    name: str = "run"
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    layers: list[int] | None = None


def test_from_dict_builds_nested_dataclasses_and_names_the_path() -> None:
    built = from_dict(Outer, {"inner": {"rate": 0.5}, "maybe": {"steps": 7}, "layers": [1, 2]})
    assert built == Outer(inner=Inner(rate=0.5), maybe=Inner(steps=7), layers=[1, 2])
    with pytest.raises(ConfigError, match=r"unknown option\(s\) inner\.ratee for Inner"):
        from_dict(Outer, {"inner": {"ratee": 0.5}})
    with pytest.raises(ConfigError, match="Outer: expected a JSON object, got list"):
        from_dict(Outer, [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"with_pooler": "yes"}, "with_pooler must be true or false, got 'yes'"),
        ({"layer_norm_eps": "1e-12"}, "layer_norm_eps must be a number, got '1e-12'"),
        ({"num_labels": 2.0}, "num_labels must be an integer, got 2.0"),
        ({"num_labels": True}, "num_labels must be an integer, got True"),
        ({"label_names": "ab"}, "label_names must be a list, got 'ab'"),
        ({"head": 3}, "head must be a string, got 3"),
    ],
)
def test_from_dict_rejects_wrong_types(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelConfig, data)


def test_from_dict_accepts_ints_for_floats_and_none_for_optionals() -> None:
    config = from_dict(ModelConfig, {"layer_norm_eps": 1, "classifier_dropout": None})
    assert config.layer_norm_eps == 1 and config.classifier_dropout is None
    with pytest.raises(ConfigError, match=r"inner\.steps must be an integer, got '3'"):
        from_dict(Outer, {"inner": {"steps": "3"}})


def test_to_dict_from_dict_round_trip(tiny_config: ModelConfig) -> None:
    config = dataclasses.replace(
        tiny_config, head="sequence_classification", num_labels=3, label_names=["a", "b", "c"]
    )
    as_json = json.loads(json.dumps(to_dict(config)))
    assert from_dict(ModelConfig, as_json) == config
    nested = Outer(inner=Inner(rate=0.25), maybe=Inner(), layers=[0, 2])
    assert from_dict(Outer, json.loads(json.dumps(to_dict(nested)))) == nested


# ----------------------------------------------------------------------------- JSON files
def test_save_json_and_load_json(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "config.json"
    save_json({"a": 1, "b": [1.5, None]}, path)
    assert load_json(path) == {"a": 1, "b": [1.5, None]}
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left


def test_load_json_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json is not valid JSON"):
        load_json(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        load_json(tmp_path / "list.json")


# ----------------------------------------------------------------------------- Hugging Face
@pytest.mark.parametrize("layout", ["bert", "distilbert"])
def test_hf_round_trip(tiny_config: ModelConfig, layout: str) -> None:
    config = dataclasses.replace(
        tiny_config,
        **(DISTILBERT if layout == "distilbert" else {}),
        hidden_act="gelu_new",
        head="token_classification",
        num_labels=3,
        label_names=["O", "B-X", "I-X"],
        problem_type="single_label_classification",
        classifier_dropout=0.3,
    )
    hf = config.to_hf("SomeArchitecture")
    assert hf["architectures"] == ["SomeArchitecture"]
    assert hf["id2label"] == {"0": "O", "1": "B-X", "2": "I-X"}
    assert hf["label2id"] == {"O": 0, "B-X": 1, "I-X": 2}
    back = ModelConfig.from_hf(json.loads(json.dumps(hf)))
    back.head = config.head  # the head is read from weights/architectures, not config.json
    if layout == "bert":
        back.with_pooler = config.with_pooler  # likewise read from the weights
    assert back == config


@pytest.mark.parametrize("layout", ["bert", "distilbert"])
def test_transformers_reads_our_config_and_we_read_theirs(
    tiny_config: ModelConfig, layout: str
) -> None:
    transformers = pytest.importorskip("transformers")
    config = dataclasses.replace(
        tiny_config, **(DISTILBERT if layout == "distilbert" else {}), num_labels=3
    )
    config_class = transformers.BertConfig if layout == "bert" else transformers.DistilBertConfig
    theirs = config_class.from_dict(config.to_hf("X"))
    if layout == "bert":
        shape = (theirs.hidden_size, theirs.num_hidden_layers, theirs.num_attention_heads)
        assert shape == (32, 3, 4)
        assert (theirs.intermediate_size, theirs.type_vocab_size) == (37, 2)
    else:
        assert (theirs.dim, theirs.n_layers, theirs.n_heads, theirs.hidden_dim) == (32, 3, 4, 37)
    assert (theirs.vocab_size, theirs.max_position_embeddings, theirs.num_labels) == (99, 64, 3)
    back = ModelConfig.from_hf(theirs.to_dict())
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
        assert getattr(back, name) == getattr(config, name), name
    assert back.layout == layout and back.num_labels == 3 and back.label_names is None


def test_from_hf_errors() -> None:
    base = {"model_type": "bert", "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 1}
    base |= {"num_attention_heads": 4, "intermediate_size": 37}
    with pytest.raises(ConfigError, match="position_embedding_type 'relative_key'"):
        ModelConfig.from_hf(base | {"position_embedding_type": "relative_key"})
    with pytest.raises(ConfigError, match="unsupported activation 'silu'"):
        ModelConfig.from_hf(base | {"hidden_act": "silu"})
    with pytest.raises(ConfigError, match="unsupported model_type 'gpt2'"):
        ModelConfig.from_hf(base | {"model_type": "gpt2"})
    with pytest.raises(KeyError):  # model/checkpoint.py turns this into "lacks the field"
        ModelConfig.from_hf({"model_type": "bert"})


def test_distilbert_layout_fixes_layer_norm_eps(tiny_config: ModelConfig) -> None:
    config = dataclasses.replace(tiny_config, **DISTILBERT, layer_norm_eps=1e-5)
    with pytest.raises(ConfigError, match="fixes layer_norm_eps at 1e-12"):
        config.to_hf("DistilBertModel")
