"""`fenliu check`: every configuration mistake is reported as `file: key.path: reason`, exit 1."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from router.config import ConfigErrors, load_config

LINE = re.compile(r"^\S+\.toml: [\w.\[\]\-]+: .+$|^\S+\.toml: .+$")


@pytest.fixture
def cfg(tmp_path: Path, demo_config: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(demo_config, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def check(fenliu, cfg: Path):
    r = fenliu("check", "--config", str(cfg))
    assert "Traceback" not in r.stderr
    return r


def test_demo_config_is_valid(fenliu, demo_config):
    r = check(fenliu, demo_config)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_typo_in_key_names_file_and_path(fenliu, cfg):
    edit(cfg / "agents.toml", "max_concurrent = 4", "max_concurent = 4")
    r = check(fenliu, cfg)
    assert r.returncode == 1
    assert f"{cfg}/agents.toml: agents[2].max_concurent: unknown key" in r.stderr


def test_wrong_type(fenliu, cfg):
    edit(cfg / "agents.toml", "max_concurrent = 4", 'max_concurrent = "four"')
    r = check(fenliu, cfg)
    assert r.returncode == 1
    assert f"{cfg}/agents.toml: agents[2].max_concurrent: expected int, got str" in r.stderr


def test_unknown_strategy_lists_the_known_ones(fenliu, cfg):
    edit(cfg / "policies/default.toml", 'strategy = "round_robin"', 'strategy = "roundrobin"')
    r = check(fenliu, cfg)
    assert r.returncode == 1
    assert (f'{cfg}/policies/default.toml: dispatch.strategy: expected one of least_load, '
            f'round_robin, weighted; got "roundrobin"') in r.stderr


def test_missing_file(fenliu, cfg):
    (cfg / "agents.toml").unlink()
    r = check(fenliu, cfg)
    assert r.returncode == 1
    assert f"{cfg}/agents.toml: file not found" in r.stderr


def test_missing_policy_file(fenliu, cfg):
    (cfg / "policies/vip.toml").unlink()
    r = check(fenliu, cfg)
    assert r.returncode == 1
    assert f"{cfg}/shops.toml: shops[2].policy: no policy file {cfg}/policies/vip.toml" in r.stderr


def test_toml_syntax_error(fenliu, cfg):
    (cfg / "shops.toml").write_text('[[shops]]\nid = "x\n', encoding="utf-8")
    r = check(fenliu, cfg)
    assert r.returncode == 1
    assert r.stderr.startswith(f"{cfg}/shops.toml: TOML syntax error")


def test_several_errors_one_a_line(fenliu, cfg):
    edit(cfg / "agents.toml", "max_concurrent = 4", "max_concurrent = 0")
    edit(cfg / "agents.toml", 'shops = ["tb-2001"]', 'shops = ["tb-9999"]')
    edit(cfg / "policies/vip.toml", "aging_per_minute = 2.0", "aging_per_minute = -1")
    r = check(fenliu, cfg)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) >= 3
    assert all(LINE.match(line) for line in lines), lines
    assert any("agents[2].max_concurrent: expected int >= 1" in line for line in lines)
    assert any("agents[3].shops[0]: unknown shop 'tb-9999'" in line for line in lines)
    assert any("dispatch.aging_per_minute: expected float >= 0" in line for line in lines)


def test_bad_schedule_and_timezone(cfg):
    edit(cfg / "agents.toml", 'start = "18:00"', 'start = "25:00"')
    edit(cfg / "shops.toml", 'policy = "vip"', 'policy = "vip"\ntimezone = "Mars/Olympus"')
    with pytest.raises(ConfigErrors) as exc:
        load_config(cfg)
    text = str(exc.value)
    assert "agents[6].schedule[0]: expected a time between 00:00 and 24:00, got '25:00'" in text
    assert "shops[2].timezone: unknown time zone 'Mars/Olympus'" in text


def test_unknown_skill_in_targets_and_unknown_dedicated_agent(cfg):
    edit(cfg / "policies/vip.toml", 'agents = ["a-06"]', 'agents = ["a-66"]')
    edit(cfg / "policies/default.toml", 'skills = ["vip"]', 'skills = ["vipp"]')
    with pytest.raises(ConfigErrors) as exc:
        load_config(cfg)
    text = str(exc.value)
    assert "dispatch.dedicated[0].agents[0]: unknown agent 'a-66'" in text
    assert "dispatch.skill_targets.vip[0].skills[0]: no agent has skill 'vipp'" in text


def test_unknown_plugin_enabled(fenliu, cfg):
    edit(cfg / "fenliu.toml", "enabled = []", 'enabled = ["no_such_plugin"]')
    r = check(fenliu, cfg)
    assert r.returncode == 1
    assert "fenliu.toml: plugins.enabled[0]: no plugin named 'no_such_plugin'" in r.stderr


def test_not_a_directory(fenliu, tmp_path):
    r = check(fenliu, tmp_path / "nope")
    assert r.returncode == 1
    assert "not a directory" in r.stderr
