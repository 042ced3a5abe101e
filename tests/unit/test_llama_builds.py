"""Choosing a llama.cpp build at cold start from the CPU's flags (handler/engine/builds.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from handler.engine import builds as llama_builds
from handler.engine.builds import LlamaBuild
from scripts.builds import llama as build_llama
from tests.support.cpu_flags import AVX2, AVX512


def write_build(root: Path, name: str, cpu_flags: list[str]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / llama_builds.BUILD_INFO).write_text(json.dumps({"name": name, "cpu_flags": cpu_flags}), encoding="utf-8")
    return folder


def test_the_flags_file_names_the_cpu_flags_its_build_needs() -> None:
    avx512 = build_llama.read_flags(build_llama.BUILD_DIR / "cmake-amd64-avx512.args")
    shipped = build_llama.read_flags(build_llama.BUILD_DIR / "cmake-amd64.args")

    assert set(build_llama.required_cpu_flags(avx512)) == AVX512
    assert set(build_llama.required_cpu_flags(shipped)) == AVX2
    assert build_llama.build_name(Path("cmake-amd64-avx512.args")) == "avx512"
    assert build_llama.build_name(Path("cmake-amd64.args")) == "amd64"


def test_the_build_needing_the_most_flags_the_cpu_has_is_chosen(tmp_path: Path) -> None:
    builds = [
        LlamaBuild("avx512", tmp_path / "avx512", AVX512),
        LlamaBuild("avx512-lite", tmp_path / "lite", AVX2 | {"avx512f", "avx512bw"}),
    ]

    assert llama_builds.choose(builds, AVX512 | {"sse2"}).build == "avx512"
    assert llama_builds.choose(builds, AVX2 | {"avx512f", "avx512bw"}).build == "avx512-lite"
    # An AVX-512 CPU without BF16 (Skylake, Cascade Lake): not the full build.
    assert llama_builds.choose(builds, AVX512 - {"avx512_bf16"}).build == "avx512-lite"


def test_without_a_runnable_build_the_packaged_one_runs_and_the_reason_names_the_missing_flags(tmp_path: Path) -> None:
    builds = [LlamaBuild("avx512", tmp_path / "avx512", AVX512)]

    choice = llama_builds.choose(builds, AVX2)
    assert (choice.build, choice.lib_dir) == ("packaged", None)
    assert "avx512f" in choice.reason
    assert "avx512_bf16" in choice.reason
    assert llama_builds.choose(builds, None).build == "packaged"
    assert llama_builds.choose([], AVX512).build == "packaged"


def test_host_flags_come_from_the_first_processor(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu\n", encoding="utf-8"
    )

    assert llama_builds.host_cpu_flags(cpuinfo) == frozenset({"fpu", "avx2", "avx512f"})
    assert llama_builds.host_cpu_flags(tmp_path / "missing") is None
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd\n", encoding="utf-8")
    assert llama_builds.host_cpu_flags(tmp_path / "arm") is None


def test_broken_build_folders_are_skipped_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_build(tmp_path, "good", ["avx2"])
    (tmp_path / "no-info").mkdir()
    bad = tmp_path / "bad-json"
    bad.mkdir()
    (bad / llama_builds.BUILD_INFO).write_text('{"cpu_flags": "avx2"}', encoding="utf-8")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: avx2\n", encoding="utf-8")
    # set, then removed: the monkeypatch then restores the variable's absence after the choice sets it
    monkeypatch.setenv(llama_builds.LIB_PATH_VARIABLE, "")
    monkeypatch.delenv(llama_builds.LIB_PATH_VARIABLE)
    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)

    choice = llama_builds.select_build(tmp_path, cpuinfo)

    assert choice.build == "good"
    assert "no-info" in choice.reason
    assert "bad-json" in choice.reason
    assert os.environ[llama_builds.LIB_PATH_VARIABLE] == str(tmp_path / "good")


def test_an_explicit_library_path_and_a_late_call_are_respected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_build(tmp_path, "any", [])
    monkeypatch.setenv(llama_builds.LIB_PATH_VARIABLE, "/somewhere")
    assert llama_builds.select_build(tmp_path).build == "explicit"

    monkeypatch.delenv(llama_builds.LIB_PATH_VARIABLE)
    monkeypatch.setitem(sys.modules, "llama_cpp", object())
    choice = llama_builds.select_build(tmp_path)
    assert choice.build == "packaged"
    assert "imported before" in choice.reason
    assert llama_builds.LIB_PATH_VARIABLE not in os.environ
    assert llama_builds.select_build(None).build == "packaged"
