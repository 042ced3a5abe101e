"""The CPU flags the shipped llama.cpp builds need (layers/build/): the AVX2 build's and the AVX-512 build's."""

from __future__ import annotations

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"})
AVX512 = AVX2 | {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512vbmi", "avx512_vnni", "avx512_bf16"}
