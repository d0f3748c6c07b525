"""Config documentation read from the source: each dataclass field's docstring, and the key listing of ``--help``.

A field's docstring is the string literal written under it (cleanrl's habit, STYLE.md rule 4). Python keeps no such
string at run time, so it is read back from the class's source with ``inspect`` + ``ast`` (once per class: cached).
The ``.py`` files ship in the wheel, so this works from an installed package too; where no source can be found (a
frozen or .pyc-only install) the docstrings are empty and the listing still shows every key and default.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import functools
import inspect
import json
import shutil
import textwrap
from typing import Any


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: its docstring}`` for the dataclass ``cls`` (whitespace collapsed; fields without one are absent)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):  # no source shipped: degrade to keys and defaults only
        return {}
    [node] = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    docs: dict[str, str] = {}
    for statement, following in zip(node.body, node.body[1:]):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    key: str
    """The dotted key as ``--set`` takes it, e.g. 'grpo.lr'."""
    default: Any
    """The built-in value."""
    doc: str
    """The field's docstring, one line ('' when it has none)."""


def config_keys(root: Any) -> list[KeyDoc]:
    """Every leaf key of the config instance ``root`` (nested dataclasses flattened, in declaration order)."""
    keys: list[KeyDoc] = []

    def walk(instance: Any, prefix: str) -> None:
        docs = field_docs(type(instance))
        for field in dataclasses.fields(instance):
            value = getattr(instance, field.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{field.name}.")
            else:
                keys.append(KeyDoc(f"{prefix}{field.name}", value, docs.get(field.name, "")))

    walk(root, "")
    return keys


def shown_default(value: Any) -> str:
    """A default as it reads in YAML or after ``--set KEY=``: text quoted (so '' and '\\n' are visible)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, list)):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def selected(keys: list[KeyDoc], patterns: tuple[str, ...]) -> list[KeyDoc]:
    """The keys matching any of the glob ``patterns`` ('grpo.*', 'seed', 'grpo.vllm_*'), in declaration order."""
    return [k for k in keys if any(fnmatch.fnmatchcase(k.key, pattern) for pattern in patterns)]


def keys_help(root: Any, patterns: tuple[str, ...], width: int | None = None) -> str:
    """The ``--help`` listing of the keys of ``root`` that match ``patterns``: one block per section (headed by the
    section's own docstring), each key as ``key = default`` with its docstring wrapped and indented below."""
    width = width or min(100, shutil.get_terminal_size().columns - 2)  # argparse's own width, capped
    chosen = selected(config_keys(root), patterns)
    if not chosen:
        return "config keys: this command reads none (--config and --set are still checked)."
    section_docs = field_docs(type(root))
    lines = textwrap.wrap("config keys it reads (set them in --config FILE.yaml or with --set KEY=VALUE; built-in "
                          "defaults shown):", width)
    section = None
    for key in chosen:
        head = key.key.split(".")[0] if "." in key.key else ""
        if head != section:
            section = head
            title = f"{head}: {section_docs.get(head, '')}".rstrip(": ") if head else "top level"
            lines += ["", *textwrap.wrap(title, width, subsequent_indent="  ", break_on_hyphens=False)]
        lines.append(f"  {key.key} = {shown_default(key.default)}")
        if key.doc:
            lines += textwrap.wrap(key.doc, width, initial_indent="      ", subsequent_indent="      ",
                                   break_on_hyphens=False)
    return "\n".join(lines)
