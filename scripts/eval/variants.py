"""The model-file variants: the source file requantized by llama.cpp's own quantizer, kept in a cache folder.

A variant is a llama_ftype (Q4_0, Q4_K_M, IQ4_NL, ...), chosen per tensor by llama.cpp as llama-quantize does, or
that type's default type for every tensor (``NAME-pure``: llama.cpp's ``pure``). The source is itself quantized
(the shipped Q4_1 file), so llama.cpp dequantizes each tensor and quantizes it again (``allow_requantize``): a
variant measures what requantizing the shipped file costs, not what its type costs against the FP16 weights.

A tensor whose rows do not divide into a type's blocks gets llama.cpp's fallback type: the k-quants' blocks are 256
values, and SmolLM2-135M's 576-wide rows take Q5_0 for Q4_K (``tensor_types`` reads what each file really holds).
Files are named by the source's sha256, so a changed source makes new variants; each is written under a temporary
name and renamed when whole.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from handler.core.files import file_sha256
from scripts.models import quantizer

#: Where the variants are written unless told otherwise (models/ is not in the repository).
CACHE_DIR = Path("models") / "variants"
#: The measured variants unless told otherwise: Q8_0 as the near-lossless control, then the 4-bit candidates.
DEFAULT_VARIANTS = ("Q8_0", "Q4_0", "Q4_K_M", "IQ4_NL", "Q4_K-pure")
#: The suffix of a variant with every tensor of its type's default type.
PURE_SUFFIX = "-pure"
#: The file type whose default tensor type a ``NAME-pure`` variant takes, where the name is a tensor type.
PURE_FILE_TYPES = {"Q4_K": "Q4_K_S", "Q5_K": "Q5_K_S", "Q3_K": "Q3_K_S"}


@dataclass(frozen=True)
class Variant:
    """One way of requantizing the source: a llama_ftype, and whether every tensor takes its default type."""

    name: str
    #: A llama_ftype name without ``LLAMA_FTYPE_MOSTLY_``.
    file_type: str
    pure: bool = False

    @classmethod
    def parse(cls, name: str) -> Variant:
        """``Q4_K_M``: llama.cpp's per-tensor choice; ``Q4_K-pure``: every tensor Q4_K (where its rows allow)."""
        if name.endswith(PURE_SUFFIX):
            base = name.removesuffix(PURE_SUFFIX)
            return cls(name, PURE_FILE_TYPES.get(base, base), pure=True)
        return cls(name, name)

    def ftype(self) -> int:
        """The llama_ftype value; an unknown name is refused with its spelling."""
        try:
            return quantizer.file_type_value(self.file_type)
        except ValueError as exc:
            raise ValueError(f"{exc}, variant {self.name}") from exc


@dataclass(frozen=True)
class VariantFile:
    """A variant written (or found) in the cache."""

    variant: Variant
    path: Path
    #: Seconds the quantizer took; 0 when the file was already in the cache.
    quantize_s: float


def variant_path(source: Path, variant: Variant, cache_dir: Path, source_sha256: str) -> Path:
    return cache_dir / f"{source.stem}.{source_sha256[:12]}.{variant.name}.gguf"


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """This process's standard output and error written to ``log`` meanwhile, llama.cpp's C code's included.

    The quantizer prints a line per tensor (and each fallback type) past Python's logging.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with log.open("wb") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def quantize(source: Path, out: Path, variant: Variant, threads: int, log: Path) -> None:
    """Requantize ``source`` into ``out`` with llama.cpp's quantizer (as llama-quantize --allow-requantize); its
    log (a line per tensor, with each fallback type) goes to ``log``."""
    try:
        with output_to(log):
            quantizer.quantize(source, out, variant.file_type, threads, requantize=True, pure=variant.pure)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}: variant {variant.name}; see {log}") from exc


def ensure_variant(source: Path, variant: Variant, cache_dir: Path, threads: int, source_sha256: str) -> VariantFile:
    """The variant's file in the cache, written now if it is not there yet."""
    out = variant_path(source, variant, cache_dir, source_sha256)
    if out.is_file():
        return VariantFile(variant, out, 0.0)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    started = time.perf_counter()
    try:
        quantize(source, partial, variant, threads, out.with_name(out.name + ".log"))
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return VariantFile(variant, out, round(time.perf_counter() - started, 1))


def ensure_variants(source: Path, names: list[str], cache_dir: Path, threads: int) -> list[VariantFile]:
    """Each named variant's file, made from ``source`` where the cache lacks it."""
    variants = [Variant.parse(name) for name in names]
    for variant in variants:
        variant.ftype()  # every name checked before the first file is written
    sha = file_sha256(source)
    return [ensure_variant(source, variant, cache_dir, threads, sha) for variant in variants]


def tensor_types(path: Path) -> dict[str, float]:
    """The share of the file's weights (parameters, 0-1) held in each tensor type, largest first."""
    import gguf

    counts: collections.Counter[str] = collections.Counter()
    for tensor in gguf.GGUFReader(path).tensors:
        counts[tensor.tensor_type.name] += int(tensor.n_elements)
    total = sum(counts.values())
    return {name: count / total for name, count in counts.most_common()}
