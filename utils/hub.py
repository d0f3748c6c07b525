"""The model/dataset hub: is a name local, and can the hub be reached? Fail at once offline, not after retries."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import UserError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
PROBE_TIMEOUT_S = 3.0
"""How long one connection attempt to the hub may take before the hub counts as unreachable."""


def is_local(name: str | Path) -> bool:
    """A path that exists, or one written as a path (absolute, ./, ../, ~): never a hub name."""
    text = str(name)
    return Path(text).expanduser().exists() or text.startswith(("/", "./", "../", "~"))


def offline_requested() -> bool:
    """The user asked for offline mode (then the hub's own cache lookups decide, fast)."""
    return any(os.environ.get(key, "").strip().lower() in ("1", "true", "yes", "on") for key in OFFLINE_VARIABLES)


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """One TCP connection to the hub endpoint (``HF_ENDPOINT`` or huggingface.co), at most PROBE_TIMEOUT_S."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def require_hub(name: str, key: str) -> None:
    """UserError naming ``key`` when ``name`` must come from the hub and the hub cannot be reached."""
    if offline_requested() or hub_reachable():
        return
    raise UserError(f"{key}: {name!r} is not a local path and the hub cannot be reached (offline); give a local "
                    "directory/file, or set HF_HUB_OFFLINE=1 to use a copy already in the hub cache")
