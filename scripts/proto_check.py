"""Regenerates the gRPC stubs into a scratch folder and fails if the committed ones differ."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
COMMITTED = ROOT / "libs"


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(PROTO_ROOT),
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out={out_dir}",
            f"--mypy_grpc_out={out_dir}",
            *protos,
        ],
        check=True,
        env=env,
    )


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        generate(out)
        generated = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
        committed = sorted(
            p.relative_to(COMMITTED)
            for p in (COMMITTED / "sinas_proto").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
        problems = [f"missing or extra stub: {p}" for p in sorted(set(generated) ^ set(committed))]
        problems += [
            f"stale stub: {p} (run `make proto`)"
            for p in generated
            if p in committed and not filecmp.cmp(out / p, COMMITTED / p, shallow=False)
        ]
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("proto-check: committed stubs match proto/")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
