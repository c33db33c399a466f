from dataclasses import dataclass, field

import pytest

from visem.config import ConfigError, from_dict, load_yaml, merge, parse_overrides, to_dict


@dataclass
class Inner:
    steps: int = 10
    lr: float = 1e-3


@dataclass
class Outer:
    name: str
    sigmas: tuple[float, ...] = (1.0,)
    flag: bool = False
    dim: int | None = None
    inner: Inner = field(default_factory=Inner)


def test_from_dict_coerces_and_nests():
    cfg = from_dict(Outer, {"name": "x", "sigmas": [1, "2.5"], "flag": "true", "dim": "3",
                            "inner": {"steps": "20", "lr": "1e-2"}})
    assert cfg == Outer("x", (1.0, 2.5), True, 3, Inner(20, 0.01))
    assert to_dict(cfg) == {"name": "x", "sigmas": [1.0, 2.5], "flag": True, "dim": 3,
                            "inner": {"steps": 20, "lr": 0.01}}


def test_unknown_keys_are_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"inner\.stepz.*known keys: lr, steps"):
        from_dict(Outer, {"name": "x", "inner": {"stepz": 3}})


@pytest.mark.parametrize("data, match", [
    ({"name": "x", "dim": "abc"}, "dim: 'abc' does not match"),
    ({"name": "x", "flag": "maybe"}, "flag: expected a boolean"),
    ({"name": "x", "inner": {"steps": 1.5}}, r"inner\.steps: expected an integer"),
    ({}, "name"),
])
def test_bad_values_name_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Outer, data)


def test_overrides_parse_yaml_scalars_and_merge():
    ov = parse_overrides(["train.steps=100", "model.name=pse", "model.sigmas=[1, 2]", "x=null"])
    assert ov == {"train": {"steps": 100}, "model": {"name": "pse", "sigmas": [1, 2]}, "x": None}
    base = {"train": {"steps": 5, "lr": 0.1}, "model": {"name": "a"}}
    assert merge(base, ov)["train"] == {"steps": 100, "lr": 0.1}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.steps"])


def test_load_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(lst)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_yaml(tmp_path / "missing.yaml")
