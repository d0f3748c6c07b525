"""The installed package: everything lives under `prmloop.*`, so a user's own `data/` or `loop/` package is never shadowed;
its dependency floors are the versions the code needs (each with its reason), and the installed versions satisfy them."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

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
    source = tmp_path / "src"  # the whole checkout: tests/, bench/, docs/ and configs/ sit beside the package's folders
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns("__pycache__", ".git", ".venv*", "runs", "wandb",
                                                                "*.egg-info", ".pytest_cache", ".ruff_cache"))
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
    assert "prmloop/utils/errors.py" in names
    assert not any(name.startswith(("prmloop/tests/", "prmloop/bench/", "prmloop/docs/", "prmloop/.ci/")) for name in names)
    configs = {name for name in names if name.startswith("prmloop/configs/")}  # demo and demo --quick read them
    assert configs == {f"prmloop/{path.relative_to(ROOT).as_posix()}" for path in ROOT.glob("configs/**/*.yaml")}
    shipped = [name for name in names if name.startswith("prmloop/loop/warm_starts/")]  # the study's warm start
    assert "prmloop/loop/warm_starts/README.md" in shipped
    assert {name.rsplit("/", 1)[1] for name in shipped} >= {"model.safetensors", "tokenizer.json", "sft_metrics.json"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "prmloop = prmloop.loop.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    # installed (unpacked, not editable): --help still reads the field docstrings from the shipped .py files
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "100"}
    where = subprocess.run([sys.executable, "-c", "import prmloop.loop.config_docs as m; print(m.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr[-2000:]
    script = ("from prmloop.loop.cli import QUICK_CONFIG as q; from prmloop.loop.config import load_config; "
              "print(q.parent.parent.name, load_config(None, preset=q).sft.steps)")
    quick = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert quick.stdout.split() == ["prmloop", "30"], quick.stdout + quick.stderr[-2000:]  # demo --quick's, installed
    shown = subprocess.run([sys.executable, "-m", "prmloop", "grpo", "--help"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr[-2000:]
    from prmloop.loop.config_docs import field_docs
    from prmloop.policy.config import GRPOConfig

    opening = " ".join(field_docs(GRPOConfig)["group_size"].split()[:4])  # read here from the checkout's source
    assert f"  grpo.group_size = {GRPOConfig().group_size}\n      {opening}" in shown.stdout

FLOORS = {
    # package: (floor, the API or constraint that sets it)
    "torch": ("2.2", ("transformers 4.56 (our floor) needs torch >= 2.2 (transformers PR #40317, 'byebye torch 2.1'); "
              "our own torch calls (autocast('cuda'), torch.load(weights_only=), isin, searchsorted) are older")),
    "transformers": ("4.56", "from_pretrained(dtype=...) in policy/load.py (PR #39782, 4.56.0; before: torch_dtype)"),
    "tokenizers": ("0.22", "transformers 4.56 requires tokenizers >= 0.22; our Tokenizer/models/trainers API is older"),
    "accelerate": ("1.0", ("Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=...)): 1.0 removed the "
                   "old split_batches= keyword, the 1.x API we write against; not tested below 1.0")),
    "datasets": ("3.0", ("load_dataset(name, subset, split=), the parquet builder, (enable|disable)_progress_bars "
                 "exist in 2.x too; 3.0 kept as the lowest series, and it resolves with transformers 4.56's hub<1.0")),
    "sympy": ("1.12", "not imported by prmloop: math-verify's latex2sympy2_extended uses it; 1.12 kept"),
    "math-verify": ("0.8", ("parse(parsing_timeout=None) and verify(timeout_seconds=None) turn the SIGALRM timeouts off "
                    "(Math-Verify issue #55: 'In 0.8.0, you can pass timeout_seconds=None'); our child process "
                    "bounds time itself")),
    "peft": ("0.18.1", ("transformers 5 (allowed by our range) needs peft >= 0.18.1; it still supports transformers "
             "4.56, so the floor pair installs together (LoraConfig target_modules='all-linear', load_peft_weights)")),
    "wandb": ("0.19.10", "wandb.init(reinit='create_new') in loop/tracking.py (added in 0.19.10)"),
    "pyyaml": ("6.0", "yaml.SafeLoader subclass, yaml.parse events; 6.0 is the first release with Python 3.10 wheels"),
    "tqdm": ("4.66.3", "tqdm.auto (any 4.x); 4.66.3 is datasets 3.0's own floor, so an install of all floors resolves"),
    "matplotlib": ("3.8", ("pyplot-free Figure() + Figure.subplots(squeeze=), MaxNLocator (3.x); 3.8 is the first "
                   "release with Python 3.12 wheels")),
}
"""Each runtime dependency's floor and why; the test below keeps pyproject.toml equal to it."""

EXTRA_FLOORS = {
    "deepspeed": ("0.19", "the ZeRO-2 path (policy/distributed.py, grpo_checkpoint.py) is tested with 0.19.x only"),
    "vllm": ("0.12", ("logprobs_mode='raw_logprobs' (0.10+), wake_up(tags=) and LLM.apply_model; 0.12 is the first "
             "vLLM whose requirements include transformers 4.56 (>=4.56.0,<5 through 0.18; >=5.5.3 from 0.24)")),
}
"""Optional extras' floors (not installed in every environment)."""


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _floors(requirements: list[str]) -> dict[str, str]:
    """``{normalised name: floor}`` of each ``name>=floor`` requirement (markers and other clauses ignored)."""
    floors = {}
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*([^;]*)", requirement)
        name, clauses = match.group(1).lower().replace("_", "-"), match.group(2)
        lower = re.search(r">=\s*([0-9][0-9a-zA-Z.]*)", clauses)
        floors[name] = lower.group(1) if lower else ""
    return floors


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def test_every_dependency_has_the_floor_its_reason_gives():
    assert _floors(_project()["dependencies"]) == {name: floor for name, (floor, _) in FLOORS.items()}


def test_extras_floors():
    extras = _project()["optional-dependencies"]
    assert _floors(extras["vllm"]) == {"vllm": EXTRA_FLOORS["vllm"][0]}
    assert _floors(extras["deepspeed"]) == {"deepspeed": EXTRA_FLOORS["deepspeed"][0]}
    assert _floors(extras["dev"])["deepspeed"] == EXTRA_FLOORS["deepspeed"][0]


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_installed_versions_satisfy_the_floors(name):
    installed = importlib.metadata.version(name)
    assert _version(installed) >= _version(FLOORS[name][0]), f"{name} {installed} < floor {FLOORS[name][0]}"


def test_the_floor_apis_exist_in_the_installed_versions():
    """The APIs the floors are for, called the way prmloop calls them (signatures only, nothing loaded)."""
    import inspect

    import math_verify
    import wandb
    from accelerate import DataLoaderConfiguration

    assert "parsing_timeout" in inspect.signature(math_verify.parse).parameters
    assert "timeout_seconds" in inspect.signature(math_verify.verify).parameters
    assert "split_batches" in inspect.signature(DataLoaderConfiguration).parameters
    assert "create_new" in inspect.getsource(wandb.init) or "create_new" in repr(inspect.signature(wandb.init))
