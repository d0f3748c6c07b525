"""The installed package: everything lives under `prmloop.*`, so a user's own `data/` or `loop/` package is never shadowed."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USER_SCRIPT = """
import json, sys
from data.errors import UserError          # the user's own package, not prmloop's
assert UserError == "the user's", UserError
from prmloop.loop.cli import main
code = main(["data", "generate", "--n", "3", "--out", sys.argv[1]])
print(json.dumps({"code": code}))
"""


def test_user_package_named_data_does_not_shadow_prmloop(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "__init__.py").write_text("")
    (tmp_path / "data" / "errors.py").write_text('UserError = "the user\'s"\n')
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "__init__.py").write_text("raise ImportError('the user loop package must not be imported')\n")
    script = tmp_path / "train.py"
    script.write_text(USER_SCRIPT)
    out = tmp_path / "problems.jsonl"
    done = subprocess.run([sys.executable, str(script), str(out)], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"code": 0' in done.stdout
    assert len(out.read_text().splitlines()) == 3


def test_python_dash_m_prmloop_runs_the_cli(tmp_path):
    done = subprocess.run([sys.executable, "-m", "prmloop", "--help"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: prmloop" in done.stdout
    failed = subprocess.run([sys.executable, "-m", "prmloop", "data", "generate", "--n", "2", "--out", "x.jsonl",
                             "--set", "nope.key=1"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert failed.returncode == 2 and "unknown key 'nope'" in failed.stderr  # the exit status reaches the shell


@pytest.mark.slow
def test_wheel_holds_only_the_prmloop_package(tmp_path):
    pytest.importorskip("setuptools", minversion="70.1")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("data", "prm", "policy", "loop"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "w"),
               str(source)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "w").glob("prmloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"prmloop", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for module in ("prmloop/__init__.py", "prmloop/__main__.py", "prmloop/data/answers.py", "prmloop/prm/model.py",
                   "prmloop/policy/grpo.py", "prmloop/loop/cli.py"):
        assert module in names
    assert not any("/package_root/" in name for name in names)
    shipped = [name for name in names if name.startswith("prmloop/loop/warm_starts/")]  # the study's warm start
    assert "prmloop/loop/warm_starts/README.md" in shipped
    assert {name.rsplit("/", 1)[1] for name in shipped} >= {"model.safetensors", "tokenizer.json", "sft_metrics.json"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "prmloop = prmloop.loop.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
