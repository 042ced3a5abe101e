"""The llama.cpp this process runs is the build that ships: the flags of layers/build/ for this architecture."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts.builds import llama as build_llama

#: CMake options of layers/build/*.args and the feature names llama.cpp's system info prints for them.
#: A feature compiled in prints "NAME = 1"; one compiled out is not printed at all.
X86_FEATURES = {
    "GGML_AVX": "AVX",
    "GGML_AVX2": "AVX2",
    "GGML_AVX_VNNI": "AVX_VNNI",
    "GGML_FMA": "FMA",
    "GGML_F16C": "F16C",
    "GGML_BMI2": "BMI2",
    "GGML_AVX512": "AVX512",
    "GGML_AVX512_VBMI": "AVX512_VBMI",
    "GGML_AVX512_VNNI": "AVX512_VNNI",
    "GGML_AVX512_BF16": "AVX512_BF16",
    "GGML_AMX_INT8": "AMX_INT8",
}


def compiled_features(system_info: str) -> set[str]:
    """The features llama.cpp reports as compiled in ("AVX2 = 1 | ...")."""
    return {name for name, value in re.findall(r"([A-Z0-9_]+) = (\d+)", system_info) if value != "0"}


def expected_x86_features(flags_file: Path) -> tuple[set[str], set[str]]:
    """The features a flags file turns on, and those it turns off."""
    values = build_llama.cmake_flag_values(build_llama.read_flags(flags_file))
    on = {feature for option, feature in X86_FEATURES.items() if values.get(option) == "ON"}
    off = {feature for option, feature in X86_FEATURES.items() if values.get(option) == "OFF"}
    return on, off


def test_loaded_llama_cpp_has_the_instruction_sets_of_the_flags_file() -> None:
    import llama_cpp

    flags_file = build_llama.default_flags_file()
    features = compiled_features(llama_cpp.llama_print_system_info().decode())

    if build_llama.host_architecture() == "amd64":
        on, off = expected_x86_features(flags_file)
        # The shipped x86_64 build is AVX2 without AVX-512 or AMX (AMX kernels crash: llama.cpp #20824).
        assert {"AVX2", "FMA", "F16C"} <= on
        assert {"AVX512", "AMX_INT8"} <= off
        assert on <= features, f"{flags_file.name} turns on {sorted(on - features)}, which the build lacks"
        assert not (off & features), f"{flags_file.name} turns off {sorted(off & features)}, which the build has"
    else:
        # Lambda arm64 (Graviton2): Armv8.2-A with the dot product, no SVE and no int8 matrix multiply.
        assert "DOTPROD" in features
        assert not features & {"SVE", "MATMUL_INT8", "SME"}


def test_arm64_flags_compile_in_the_dot_product_and_nothing_graviton2_lacks() -> None:
    # Lambda arm64 is Graviton2 (Neoverse N1): Armv8.2-A with the dot product and FP16 arithmetic, no SVE,
    # i8mm or BF16. GGML_CPU_ARM_ARCH becomes -march, which defines __ARM_FEATURE_DOTPROD, the one thing
    # llama.cpp's "DOTPROD = 1" reads (compile time only); a non-native build without it is plain Armv8-A.
    values = build_llama.cmake_flag_values(build_llama.read_flags(build_llama.BUILD_DIR / "cmake-arm64.args"))

    architecture, *extensions = values["GGML_CPU_ARM_ARCH"].split("+")
    assert architecture == "armv8.2-a"
    assert "dotprod" in extensions
    assert not {"sve", "sve2", "i8mm", "bf16", "sme"} & set(extensions)
    assert values["GGML_NATIVE"] == "OFF"
    assert values["GGML_CPU_ALL_VARIANTS"] == "OFF"


def test_build_key_changes_with_every_flag_version_and_interpreter() -> None:
    flags = build_llama.read_flags(build_llama.BUILD_DIR / "cmake-amd64.args")
    key = build_llama.build_key("0.3.36", flags, "cpython-311 linux-x86_64")

    flipped = [flag.replace("GGML_AVX512=OFF", "GGML_AVX512=ON") for flag in flags]
    assert build_llama.build_key("0.3.36", flipped, "cpython-311 linux-x86_64") != key
    assert build_llama.build_key("0.3.37", flags, "cpython-311 linux-x86_64") != key
    assert build_llama.build_key("0.3.36", flags, "cpython-312 linux-x86_64") != key
    # comments and blank lines are not flags: the same flags give the same key
    assert build_llama.build_key("0.3.36", list(flags), "cpython-311 linux-x86_64") == key


def test_cached_wheel_is_reused_only_under_its_own_key(tmp_path: Path) -> None:
    import sys

    flags = build_llama.read_flags(build_llama.BUILD_DIR / "cmake-amd64.args")
    tag = build_llama.interpreter_tag(sys.executable)
    folder = tmp_path / build_llama.build_key("0.3.36", flags, tag)
    folder.mkdir()
    wheel = folder / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"built with these flags")

    assert build_llama.ensure_wheel("0.3.36", flags, sys.executable, tmp_path) == wheel
    # A wheel built with other flags sits under another key and is never picked up for these.
    other = [flag.replace("GGML_AVX512=OFF", "GGML_AVX512=ON") for flag in flags]
    assert build_llama.build_key("0.3.36", other, tag) != folder.name


def test_flags_files_hold_only_plain_cmake_definitions(tmp_path: Path) -> None:
    for flags_file in sorted(build_llama.BUILD_DIR.glob("cmake-*.args")):
        flags = build_llama.read_flags(flags_file)
        assert flags, flags_file
        assert all(flag.startswith("-D") for flag in flags), flags_file
        values = build_llama.cmake_flag_values(flags)
        # every build: no AMX, no run-time backend loading, no OpenMP runtime outside the task root
        assert values.get("GGML_AMX_INT8", "OFF") == "OFF", flags_file
        assert values["GGML_BACKEND_DL"] == "OFF", flags_file
        assert values["GGML_OPENMP"] == "OFF", flags_file
        assert values["GGML_NATIVE"] == "OFF", flags_file

    bad = tmp_path / "cmake-bad.args"
    bad.write_text("-DGGML_AVX2=ON\n-DCMAKE_C_FLAGS=-O2 -g\n", encoding="utf-8")
    with pytest.raises(build_llama.BuildError, match="one -DNAME=VALUE"):
        build_llama.read_flags(bad)
