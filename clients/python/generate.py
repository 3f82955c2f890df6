#!/usr/bin/env python3
"""Generates the Python stubs of rlm_client from the repository's proto/ tree.

    python generate.py                 # (re)writes src/rlm_client/pb
    python generate.py --out DIR       # writes the same tree into DIR (used by check_generated.sh)

Uses the protoc bundled with the pinned grpcio-tools (requirements.txt), so
the output depends only on that pin and on proto/. Writes messages (_pb2.py),
type stubs (_pb2.pyi) and services (_pb2_grpc.py) for every .proto under
proto/rlm/, then rewrites the generated absolute imports (`from rlm.v1 import
...`) to live under `rlm_client.pb` so the package installs no top-level
`rlm` module of its own.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
DEFAULT_OUT = HERE / "src" / "rlm_client" / "pb"
PACKAGE_PREFIX = "rlm_client.pb"

_IMPORT = re.compile(r"^from rlm((?:\.\w+)+) import ", re.MULTILINE)


def proto_files() -> list[str]:
    files = sorted(
        path.relative_to(PROTO_ROOT).as_posix()
        for path in (PROTO_ROOT / "rlm").rglob("*.proto")
    )
    if not files:
        sys.exit(f"generate.py: no .proto files under {PROTO_ROOT / 'rlm'}")
    return files


def run_protoc(out: Path) -> None:
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        sys.exit(
            "generate.py: grpcio-tools is not installed; "
            "pip install -r clients/python/requirements.txt (or run clients/ci-deps.sh)"
        )
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *proto_files(),
    ]
    # protoc resolves the file names relative to the include path.
    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)
    try:
        status = protoc.main(args)
    finally:
        os.chdir(cwd)
    if status != 0:
        sys.exit(f"generate.py: protoc failed with status {status}")


def postprocess(out: Path) -> None:
    for path in sorted(out.rglob("*")):
        if path.suffix in (".py", ".pyi"):
            text = path.read_text(encoding="utf-8")
            new = _IMPORT.sub(lambda m: f"from {PACKAGE_PREFIX}.rlm{m.group(1)} import ", text)
            if new != text:
                path.write_text(new, encoding="utf-8")
    # Every directory becomes a regular package.
    for directory in [out, *sorted(p for p in out.rglob("*") if p.is_dir())]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text(
                '"""Generated from proto/ by clients/python/generate.py. DO NOT EDIT."""\n',
                encoding="utf-8",
            )


def generate(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="rlm-pygen-") as tmp:
        staging = Path(tmp) / "pb"
        staging.mkdir()
        run_protoc(staging)
        postprocess(staging)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    args = parser.parse_args()
    generate(args.out.resolve())
    print(f"generated {sum(1 for _ in args.out.rglob('*.py*'))} files into {args.out}")


if __name__ == "__main__":
    main()
