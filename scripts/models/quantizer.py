"""llama.cpp's own quantizer (``llama_model_quantize``, what ``llama-quantize`` runs), called one way for every script.

The generated models are quantized from F16 (random_model.py); the benchmark's and the quality harness's variants
are requantized from an already quantized file (``requantize``: llama.cpp dequantizes each tensor and quantizes it
again), optionally with every tensor of the file type's default type (``pure``) instead of llama.cpp's per-tensor
choice. A tensor already of the target type is copied, not requantized.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path


def file_type_value(file_type: str) -> int:
    """The llama_ftype of a name without ``LLAMA_FTYPE_MOSTLY_`` (Q4_K_M, Q4_0, IQ4_NL, ...); unknown names refused."""
    import llama_cpp

    value = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{file_type.upper()}", None)
    if not isinstance(value, int):
        raise ValueError(f"llama.cpp has no file type {file_type!r} (LLAMA_FTYPE_MOSTLY_{file_type.upper()})")
    return value


def quantize(
    source: Path,
    out: Path,
    file_type: str = "Q4_K_M",
    threads: int | None = None,
    *,
    requantize: bool = False,
    pure: bool = False,
) -> None:
    """Quantize ``source`` into ``out`` as ``file_type``; threads: ``threads``, else every CPU this process may use."""
    import llama_cpp

    ftype = file_type_value(file_type)
    # llama-cpp-python prints llama.cpp's log (a line per tensor here) until its logger is told otherwise.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or len(os.sched_getaffinity(0))
    params.allow_requantize = requantize
    params.pure = pure
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source} to {file_type} (status {status})")
