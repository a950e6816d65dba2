"""`fenliu check`: every configuration mistake is reported as `file: key.path: reason`, exit 1."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.config import ConfigErrors, load_config

LINE = re.compile(r"^\S+\.toml: [\w.\[\]\-]+: .+$|^\S+\.toml: .+$")
ROOT_CONFIG = Path(__file__).resolve().parents[3] / "config"


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
    edit(cfg / "policies/default.toml", 'strategy = "least_load"', 'strategy = "roundrobin"')
    r = check(fenliu, cfg)
    assert r.returncode == 1
    assert (f'{cfg}/policies/default.toml: dispatch.strategy: expected one of "least_load", '
            f'"round_robin", "weighted"; got "roundrobin"') in r.stderr


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


# -- files an editor or a cut-short save can leave behind (issue 15) ---------------------------------


@pytest.mark.parametrize(("name", "damage", "reason"), [
    ("agents.toml", lambda b: b.replace(b'name = "', b'name = "\xff\xfe', 1),
     re.compile(r"^line \d+, column \d+: not valid UTF-8 \(byte 0xff\); save the file as UTF-8$")),
    ("policies/default.toml", lambda b: b[:200] + b"\xe5" + b[200:],  # a cut multi-byte character
     re.compile(r"^line \d+, column \d+: not valid UTF-8 \(byte 0xe5\)")),
    ("shops.toml", lambda b: b"\xef\xbb\xbf" + b,
     re.compile(r"^file starts with a byte-order mark \(BOM\); save it as UTF-8 without BOM$")),
    ("policies/vip.toml", lambda b: b"",
     re.compile(r"^file is empty \(an interrupted save\?\)$")),
    ("fenliu.toml", lambda b: b"\n  \n",
     re.compile(r"^file is empty")),
    ("agents.toml", lambda b: b[:b.index(b'skills = ["') + 12],
     re.compile(r"^TOML syntax error: .*\(at end of document\)$")),
])
def test_unreadable_files_are_named_not_a_traceback(fenliu, cfg, name, damage, reason):
    path = cfg / name
    path.write_bytes(damage(path.read_bytes()))
    r = check(fenliu, cfg)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    mine = [line.removeprefix(f"{path}: ") for line in lines if line.startswith(f"{path}: ")]
    assert mine and reason.match(mine[0]), lines
    assert all(LINE.match(line) for line in lines), lines


def test_a_word_list_that_is_not_utf8_is_named(cfg):
    words = cfg / "words" / "abuse.txt"
    words.write_bytes(b"\xef\xbb\xbf" + words.read_bytes())
    with pytest.raises(ConfigErrors) as exc:
        load_config(cfg)
    assert (f"{cfg}/policies/default.toml: sensitive.lists[2].file: cannot read {words}: "
            f"file starts with a byte-order mark (BOM)") in str(exc.value)


def test_unknown_default_time_zone_fails_check_not_stats(fenliu, cfg):
    edit(cfg / "fenliu.toml", 'timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghia"')
    want = f"{cfg}/fenliu.toml: defaults.timezone: unknown time zone 'Asia/Shanghia' (did you mean 'Asia/Shanghai'?)"
    r = check(fenliu, cfg)
    assert r.returncode == 1 and r.stderr.strip() == want
    r = fenliu("stats", "--config", str(cfg), "--store", str(cfg.parent / "none.db"))
    assert r.returncode == 1 and "Traceback" not in r.stderr and want in r.stderr


@pytest.mark.parametrize(("name", "old", "new", "line"), [
    # Opening "Asia" raises IsADirectoryError, not the error a Schedule catches.
    ("agents.toml", 'max_concurrent = 4', 'max_concurrent = 4\ntimezone = "Asia"', "agents[2].timezone: unknown time zone 'Asia'"),
    ("shops.toml", 'policy = "vip"', 'policy = "vip"\ntimezone = ""', "shops[2].timezone: unknown time zone ''"),
    ("policies/default.toml", "accept_timeout_s = 45", "accept_timeout_s = inf",
     "dispatch.accept_timeout_s: expected a finite number, got inf"),
    ("policies/default.toml", "sticky_hours = 48", "sticky_hours = nan", "dispatch.sticky_hours: expected a finite number, got nan"),
    ("policies/default.toml", "accept_timeout_s = 45", "accept_timeout_s = 1e300",
     "dispatch.accept_timeout_s: expected float <= 31622400"),
    ("fenliu.toml", "ingest_queue_max = 10000", "ingest_queue_max = 99999999999999999999",
     "server.ingest_queue_max: integer out of range (64-bit)"),
    ("fenliu.toml", 'backend = "sqlite"', 'backend = "sqlite"\nredis_url = "localhost:6379"', "storage.redis_url: expected str matching"),
    ("shops.toml", 'policy = "vip"', 'policy = "vip"\ncallback_url = "bridge.example/x"', "shops[2].callback_url: expected str matching"),
    ("fenliu.toml", "[defaults]", '[defaults]\nreply_window = ["08:00", "25:00"]',
     "defaults.reply_window: expected a time between 00:00 and 24:00, got '25:00'"),
    ("agents.toml", 'start = "18:00"', 'start = "18:60"', "agents[6].schedule[0]: expected a time between 00:00 and 24:00"),
    ("policies/default.toml", 'regex = "我(要|想)(退|换)|申请(退|换)"', 'regex = "我(要|想"', "skills.rules[1].regex"),
])
def test_values_that_would_only_fail_later_fail_at_load(cfg, name, old, new, line):
    edit(cfg / name, old, new)
    with pytest.raises(ConfigErrors) as exc:
        load_config(cfg)
    assert any(str(e).startswith(f"{cfg / name}: {line}") for e in exc.value.errors), str(exc.value)


# -- mutated demo configurations: a reason a line, never anything else -------------------------------

CONFIG_FILES = sorted(p.relative_to(ROOT_CONFIG) for p in ROOT_CONFIG.rglob("*")
                      if p.is_file() and p.suffix in (".toml", ".txt") and "scenarios" not in p.parts)
VALUES = [b"1", b"-5", b"0", b"1.5", b"-1e400", b"nan", b'"x"', b'""', b"[]", b"{}", b"true", b'"25:00"',
          b'"Asia/Shanghia"', b'"Asia"', b'"("', b"99999999999999999999", b'["*"]', b"[1, 2]", b'{ a = 1 }']


@st.composite
def mutation(draw: st.DrawFn) -> tuple[str, str, Any]:
    name = str(draw(st.sampled_from(CONFIG_FILES)))
    kind = draw(st.sampled_from(["flip", "truncate", "delete", "duplicate", "value", "unknown", "utf8", "bom", "empty"]))
    return name, kind, draw(st.randoms(use_true_random=False))


def mutate(data: bytes, kind: str, rnd: Any) -> bytes:
    lines = data.split(b"\n")
    at = rnd.randrange(len(lines))
    if kind == "flip" and data:
        i = rnd.randrange(len(data))
        return data[:i] + bytes([rnd.randrange(256)]) + data[i + 1:]
    if kind == "truncate":
        return data[:rnd.randrange(len(data) + 1)]
    if kind == "delete":
        del lines[at]
    elif kind == "duplicate":
        lines.insert(at, lines[at])
    elif kind == "value":
        assigned = [i for i, line in enumerate(lines) if b"=" in line] or [at]
        i = rnd.choice(assigned)
        lines[i] = lines[i].split(b"=")[0] + b"= " + rnd.choice(VALUES)
    elif kind == "unknown":
        lines.insert(at, b"zz_unknown = 1")
    elif kind == "utf8":
        i = rnd.randrange(len(data) + 1)
        return data[:i] + rnd.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]) + data[i:]
    elif kind == "bom":
        return b"\xef\xbb\xbf" + data
    elif kind == "empty":
        return b""
    return b"\n".join(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation(), min_size=1, max_size=3))
def test_mutated_demo_config_gives_reasons_never_exceptions(tmp_path_factory, demo_config, mutations):
    """Any damage to the demo configuration: load_config returns, or raises ConfigErrors whose
    every line is ``file: key.path: reason`` about a file of the folder; nothing else escapes."""
    cfg = tmp_path_factory.mktemp("mutated") / "config"
    shutil.copytree(demo_config, cfg)
    for name, kind, rnd in mutations:
        (cfg / name).write_bytes(mutate((cfg / name).read_bytes(), kind, rnd))
    try:
        load_config(cfg)
    except ConfigErrors as exc:
        assert exc.errors
        for e in exc.errors:
            assert Path(e.file).is_relative_to(cfg), str(e)
            assert e.reason and "\n" not in str(e) and "Traceback" not in e.reason, str(e)
            assert str(e).startswith(f"{e.file}: ")


@pytest.mark.parametrize("seed", range(4))
def test_mutated_demo_config_through_the_real_cli(fenliu, cfg, seed):
    import random

    rnd = random.Random(seed)
    for name, kind in (("agents.toml", "utf8"), ("policies/default.toml", "truncate"),
                       ("shops.toml", "value"), ("fenliu.toml", "flip"))[seed:seed + 2]:
        (cfg / name).write_bytes(mutate((cfg / name).read_bytes(), kind, rnd))
    r = check(fenliu, cfg)
    assert r.returncode in (0, 1)
    out = r.stderr.strip().splitlines() if r.returncode else []
    assert all(line.startswith(str(cfg)) and LINE.match(line) for line in out), out
