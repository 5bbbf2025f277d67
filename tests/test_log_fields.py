"""No log call passes an `extra` field named like a LogRecord attribute: logging raises
KeyError for those at run time, so a log line would break the request that writes it."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def source_files() -> list[Path]:
    folders = [ROOT / "libs" / "sinas_common", ROOT / "libs" / "sinas_devstack"]
    folders += sorted(p for p in (ROOT / "services").glob("*/sinas_*") if p.is_dir())
    return [path for folder in folders for path in sorted(folder.rglob("*.py"))]


def test_sources_are_found() -> None:
    assert len(source_files()) > 50


def test_no_extra_field_shadows_a_log_record_attribute() -> None:
    clashes = []
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.keyword)
                and node.arg == "extra"
                and isinstance(node.value, ast.Dict)
            ):
                continue
            for key in node.value.keys:
                if isinstance(key, ast.Constant) and key.value in RESERVED:
                    clashes.append(f"{path.relative_to(ROOT)}:{key.lineno} {key.value}")
    assert clashes == []
