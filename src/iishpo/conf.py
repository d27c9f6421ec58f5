"""Where the configuration directory is: ``$IISHPO_CONF``, else ``./conf``.

Below everything else, so the optimizers' registry and the configuration loader find the
same directory without importing each other."""

from __future__ import annotations

import os
from pathlib import Path

#: environment variable naming the configuration directory (default: ./conf)
CONF_ENV = "IISHPO_CONF"


def conf_dir() -> Path:
    return Path(os.environ.get(CONF_ENV, "conf")).resolve()
