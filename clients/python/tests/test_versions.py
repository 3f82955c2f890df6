"""The version pins agree with each other and with the committed stubs."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import google.protobuf
import grpc

import rlm_client
from rlm_client._version import GRPC_GENERATED_VERSION, PROTOBUF_GENERATED_VERSION

HERE = Path(__file__).resolve().parent.parent
PB = HERE / "src" / "rlm_client" / "pb"


def _requirements() -> dict:
    pins = {}
    for line in (HERE / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_generated_grpc_version_matches_the_pins():
    for path in PB.rglob("*_pb2_grpc.py"):
        found = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", path.read_text())
        assert found and found.group(1) == GRPC_GENERATED_VERSION, path
    pins = _requirements()
    for name in ("grpcio", "grpcio-tools", "grpcio-health-checking", "grpcio-reflection"):
        assert pins[name] == GRPC_GENERATED_VERSION, name


def test_generated_protobuf_version_matches_the_pins():
    for path in PB.rglob("*_pb2.py"):
        found = re.search(r"Protobuf Python Version: (\S+)", path.read_text())
        assert found and found.group(1) == PROTOBUF_GENERATED_VERSION, path
    assert _requirements()["protobuf"] == PROTOBUF_GENERATED_VERSION


def test_pyproject_bounds_match_the_generated_code():
    project = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"]
    assert f"grpcio>={GRPC_GENERATED_VERSION},<2" in deps
    assert f"grpcio-health-checking>={GRPC_GENERATED_VERSION},<2" in deps
    major = PROTOBUF_GENERATED_VERSION.split(".")[0]
    assert f"protobuf>={PROTOBUF_GENERATED_VERSION},<{int(major) + 1}" in deps
    assert project["version"] == rlm_client.__version__
    assert f"grpcio-tools=={GRPC_GENERATED_VERSION}" in project["optional-dependencies"]["generate"]


def test_installed_runtime_is_the_pinned_one():
    pins = _requirements()
    assert grpc.__version__ == pins["grpcio"]
    assert google.protobuf.__version__ == pins["protobuf"]
    assert metadata.version("grpcio-tools") == pins["grpcio-tools"]
    assert metadata.version("rlm-runtime-client") == rlm_client.__version__
