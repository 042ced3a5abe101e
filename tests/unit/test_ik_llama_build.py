"""The fork's build recipe: the shipped flags passed through, what the fork needs added, a key per build."""

from __future__ import annotations

import pytest

from scripts.builds import ik_llama
from scripts.builds.llama import BUILD_DIR, read_flags

AVX2 = read_flags(BUILD_DIR / "cmake-amd64.args")
AVX512 = read_flags(BUILD_DIR / "cmake-amd64-avx512.args")


def test_the_shipped_flags_are_passed_as_they_are() -> None:
    args = ik_llama.cmake_args(AVX2)
    assert args[: len(AVX2)] == AVX2
    assert "-DBUILD_SHARED_LIBS=ON" in args
    # The sdist's libraries find each other wherever they are copied.
    assert "-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../lib" in args
    assert not any(arg.startswith("-DCMAKE_C_FLAGS") for arg in args)


def test_avx512_gets_the_instruction_sets_mainline_compiles_with() -> None:
    args = ik_llama.cmake_args(AVX512)
    assert f"-DCMAKE_C_FLAGS={ik_llama.AVX512_PARITY}" in args
    assert f"-DCMAKE_CXX_FLAGS={ik_llama.AVX512_PARITY}" in args
    assert set(ik_llama.AVX512_PARITY.split()) == {"-mavx512cd", "-mavx512vl", "-mavx512dq"}


def test_each_flags_file_has_its_own_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ik_llama, "compiler_version", lambda: "cc (Debian 12.2.0-14) 12.2.0")
    first = ik_llama.build_key(AVX2)
    assert first != ik_llama.build_key(AVX512)
    assert first == ik_llama.build_key(list(AVX2))
    monkeypatch.setattr(ik_llama, "compiler_version", lambda: "cc (Debian 14.2.0) 14.2.0")
    assert ik_llama.build_key(AVX2) != first  # another compiler: another build
