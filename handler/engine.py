"""The process-wide llama.cpp model: loaded once, prompts built safely, generation with timings.

``llama_cpp`` is imported only when the model loads, so an environment that answers from the
results table never pays for it.
"""

from __future__ import annotations

import hashlib
import re
import resource
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from handler.config import Settings
from handler.errors import GenerationError, InputTooLong, InvalidRequest, ModelLoadError
from handler.schemas import GenerationOptions, ModelInfo
from handler.tasks import Message

if TYPE_CHECKING:
    from llama_cpp import Llama

_HASH_CHUNK = 8 * 1024 * 1024
# C's isspace(), which llama.cpp uses when a special token strips the whitespace beside it.
_C_WHITESPACE = " \t\n\v\f\r"


@dataclass(frozen=True)
class ModelIdentity:
    """What identifies the model in result ids: its file name and content hash."""

    file: str
    sha256: str


@lru_cache(maxsize=4)
def model_identity(path: Path, sha256: str | None = None) -> ModelIdentity:
    """The model's identity without loading it: a pinned hash, its ``.sha256`` sidecar, or a hash of the file."""
    if sha256:
        return ModelIdentity(path.name, sha256)
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        pinned = sidecar.read_text(encoding="utf-8").split()
        if pinned and re.fullmatch(r"[0-9a-f]{64}", pinned[0]):
            return ModelIdentity(path.name, pinned[0])
    try:
        digest = hashlib.sha256()
        with path.open("rb") as model_file:
            while chunk := model_file.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise ModelLoadError(f"cannot read the model file MODEL_PATH={str(path)!r}: {exc.strerror}") from exc
    return ModelIdentity(path.name, digest.hexdigest())


@dataclass(frozen=True)
class PromptTokens:
    """A prompt as token ids, with the token ranges that hold message content (data, never control)."""

    tokens: list[int]
    data_spans: list[tuple[int, int]]


@dataclass(frozen=True)
class Completion:
    """One generation's text and llama.cpp's own timings of it."""

    text: str
    finish_reason: str
    prompt_tokens: int
    prompt_eval_tokens: int
    prompt_ms: float
    completion_tokens: int
    eval_runs: int
    eval_ms: float
    total_ms: float

    @property
    def prompt_tokens_per_s(self) -> float:
        return _per_second(self.prompt_eval_tokens, self.prompt_ms)

    @property
    def eval_tokens_per_s(self) -> float:
        return _per_second(self.eval_runs, self.eval_ms)


def _per_second(count: int, milliseconds: float) -> float:
    return round(count * 1000.0 / milliseconds, 3) if milliseconds > 0 else 0.0


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


@dataclass(frozen=True)
class _Special:
    id: int
    lstrip: bool
    rstrip: bool


@dataclass
class _Text:
    text: str
    is_data: bool


class Engine:
    """One loaded model and the only way the service talks to llama.cpp."""

    def __init__(self, llama: Llama, identity: ModelIdentity, n_threads: int, load_ms: float) -> None:
        import llama_cpp

        self._llama = llama
        self._lib = llama_cpp
        self._lock = threading.Lock()
        self.identity = identity
        self.n_threads = n_threads
        self.load_ms = load_ms
        self.n_ctx: int = llama.n_ctx()
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelLoadError(f"model {identity.file} has no tokenizer.chat_template in its GGUF metadata")
        self._template = _compile_template(template)
        self._vocab = llama._model.vocab
        self._specials = self._read_special_tokens()
        self._special_ids = {special.id for special in self._specials.values()}
        self._special_pattern = re.compile(
            "|".join(re.escape(text) for text in sorted(self._specials, key=len, reverse=True))
        )
        self._bos = llama_cpp.llama_vocab_bos(self._vocab)
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab)) and self._bos >= 0
        self.info = ModelInfo(
            file=identity.file,
            sha256=identity.sha256,
            quantization=_quantization_name(llama_cpp, llama.metadata.get("general.file_type")),
            context_length=self.n_ctx,
        )

    def _read_special_tokens(self) -> dict[str, _Special]:
        # The tokens llama.cpp matches in text when it parses special tokens, with their strip rules.
        lib = self._lib
        matched = lib.LLAMA_TOKEN_ATTR_CONTROL | lib.LLAMA_TOKEN_ATTR_USER_DEFINED | lib.LLAMA_TOKEN_ATTR_UNKNOWN
        specials = {}
        for token in range(lib.llama_vocab_n_tokens(self._vocab)):
            attr = lib.llama_vocab_get_attr(self._vocab, token)
            if attr & matched:
                text = lib.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace")
                if text:
                    specials[text] = _Special(
                        token,
                        lstrip=bool(attr & lib.LLAMA_TOKEN_ATTR_LSTRIP),
                        rstrip=bool(attr & lib.LLAMA_TOKEN_ATTR_RSTRIP),
                    )
        return specials

    # -- prompts -------------------------------------------------------------------------------

    def render(self, messages: Sequence[Message]) -> str:
        """The chat template rendered as one string, as llama-cpp-python's chat path does (reference only)."""
        return self._template.render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token=self._token_text(self._bos),
            eos_token=self._token_text(self._lib.llama_vocab_eos(self._vocab)),
        )

    def build_prompt(self, messages: Sequence[Message]) -> PromptTokens:
        """Prompt tokens from the model's chat template, with message content tokenized as plain text.

        The template is rendered with a random placeholder for each content; only the template's own
        text is searched for special tokens. The result equals what llama.cpp gives for the whole
        rendered string whenever the content holds no special-token text, and content that does
        stays text.
        """
        nonce = secrets.token_hex(8)
        placeholders = [f"\ue000{nonce}:{index}\ue001" for index in range(len(messages))]
        rendered = self._template.render(
            messages=[{"role": m.role, "content": p} for m, p in zip(messages, placeholders, strict=True)],
            add_generation_prompt=True,
            bos_token=self._token_text(self._bos),
            eos_token=self._token_text(self._lib.llama_vocab_eos(self._vocab)),
        )
        pieces = re.split(f"\ue000{nonce}:(\\d+)\ue001", rendered)
        items: list[_Special | _Text] = []
        seen = []
        for position, piece in enumerate(pieces):
            if position % 2:
                index = int(piece)
                seen.append(index)
                items.append(_Text(messages[index].content, is_data=True))
            else:
                items.extend(self._split_specials(piece))
        if sorted(seen) != list(range(len(messages))):
            raise GenerationError("the model's chat template dropped or repeated a message; it cannot be used safely")
        _apply_strip_rules(items)
        return self._tokenize_items(items)

    def _split_specials(self, template_text: str) -> list[_Special | _Text]:
        items: list[_Special | _Text] = []
        position = 0
        for match in self._special_pattern.finditer(template_text) if self._specials else ():
            items.append(_Text(template_text[position : match.start()], is_data=False))
            items.append(self._specials[match.group()])
            position = match.end()
        items.append(_Text(template_text[position:], is_data=False))
        return items

    def _tokenize_items(self, items: list[_Special | _Text]) -> PromptTokens:
        tokens: list[int] = []
        data_spans: list[tuple[int, int]] = []
        if self._add_bos and not (items and isinstance(items[0], _Special) and items[0].id == self._bos):
            tokens.append(self._bos)
        run: list[_Text] = []

        def flush() -> None:
            # Adjacent template text and content form one raw fragment, as in the whole rendered string.
            text = "".join(part.text for part in run)
            if text:
                start = len(tokens)
                tokens.extend(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))
                if any(part.is_data and part.text for part in run):
                    data_spans.append((start, len(tokens)))
                    reserved = self._special_ids.intersection(tokens[start:])
                    if reserved:
                        names = sorted(self._token_text(token) for token in reserved)
                        raise InvalidRequest(
                            f"text contains {names}, which this model reserves even in plain text; remove it"
                        )
            run.clear()

        for item in items:
            if isinstance(item, _Text):
                run.append(item)
            else:
                flush()
                tokens.append(item.id)
        flush()
        return PromptTokens(tokens, data_spans)

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return str(self._lib.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace"))

    def is_special(self, token: int) -> bool:
        """Whether the token is a control (or reserved) token rather than text."""
        return token in self._special_ids

    def check_fits(self, prompt: PromptTokens, max_tokens: int) -> None:
        """Refuse, before any evaluation, a prompt that cannot be answered within the context window."""
        needed = len(prompt.tokens) + max_tokens
        if needed > self.n_ctx:
            raise InputTooLong(
                f"input is {len(prompt.tokens)} tokens and max_tokens is {max_tokens}: {needed} tokens do not fit "
                f"the context window of {self.n_ctx}; shorten the text by at least {needed - self.n_ctx} tokens "
                "or lower options.max_tokens",
                prompt_tokens=len(prompt.tokens),
                max_tokens=max_tokens,
                context_window=self.n_ctx,
            )

    # -- generation ----------------------------------------------------------------------------

    def generate(self, prompt: PromptTokens, options: GenerationOptions) -> Completion:
        """Generate greedily or by sampling, stopping on end-of-generation tokens, stop strings or max_tokens."""
        self.check_fits(prompt, options.max_tokens)
        with self._lock:
            context = self._llama._ctx.ctx
            self._lib.llama_perf_context_reset(context)
            started = time.perf_counter()
            try:
                result: Any = self._llama.create_completion(
                    prompt=list(prompt.tokens),
                    max_tokens=options.max_tokens,
                    temperature=options.temperature,
                    top_p=options.top_p,
                    repeat_penalty=options.repeat_penalty,
                    seed=options.seed,
                    stop=list(options.stop),
                )
            except (RuntimeError, ValueError) as exc:
                raise GenerationError(f"llama.cpp failed to generate: {exc}") from exc
            total_ms = (time.perf_counter() - started) * 1000.0
            perf = self._lib.llama_perf_context(context)
        choice = result["choices"][0]
        return Completion(
            text=choice["text"],
            finish_reason=choice["finish_reason"] or "length",
            prompt_tokens=len(prompt.tokens),
            prompt_eval_tokens=int(perf.n_p_eval),
            prompt_ms=round(perf.t_p_eval_ms, 3),
            completion_tokens=int(result["usage"]["completion_tokens"]),
            eval_runs=int(perf.n_eval),
            eval_ms=round(perf.t_eval_ms, 3),
            total_ms=round(total_ms, 3),
        )


def _compile_template(source: str) -> jinja2.Template:
    # The same sandboxed environment that Hugging Face and llama-cpp-python render chat templates in.
    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    try:
        return environment.from_string(source)
    except jinja2.TemplateError as exc:
        raise ModelLoadError(f"the model's chat template does not compile: {exc}") from exc


def _apply_strip_rules(items: list[_Special | _Text]) -> None:
    """Strip whitespace beside special tokens marked lstrip/rstrip, as llama.cpp's tokenizer does."""
    for index, item in enumerate(items):
        if not isinstance(item, _Special):
            continue
        if item.rstrip:
            for following in items[index + 1 :]:
                if not isinstance(following, _Text):
                    break
                following.text = following.text.lstrip(_C_WHITESPACE)
                if following.text:
                    break
        if item.lstrip:
            for preceding in reversed(items[:index]):
                if not isinstance(preceding, _Text):
                    break
                preceding.text = preceding.text.rstrip(_C_WHITESPACE)
                if preceding.text:
                    break


def _quantization_name(lib: Any, file_type: str | None) -> str | None:
    if file_type is None:
        return None
    names = {
        getattr(lib, name): name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_")
        for name in dir(lib)
        if name.startswith("LLAMA_FTYPE_") and name != "LLAMA_FTYPE_GUESSED"
    }
    try:
        return names.get(int(file_type), f"ftype {file_type}")
    except ValueError:
        return str(file_type)


def load_engine(settings: Settings) -> Engine:
    """Load the GGUF named by the settings; errors say which file and why."""
    path = settings.model_path
    if not path.is_file():
        raise ModelLoadError(f"model file not found: MODEL_PATH={str(path)!r}")
    identity = model_identity(path, settings.model_sha256)
    from llama_cpp import Llama

    started = time.perf_counter()
    try:
        llama = Llama(
            model_path=str(path),
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads,
            n_threads_batch=settings.threads_batch,
            n_batch=settings.n_batch,
            n_ubatch=settings.n_ubatch,
            use_mmap=settings.use_mmap,
            verbose=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"llama.cpp could not load {path.name}: {exc}") from exc
    load_ms = (time.perf_counter() - started) * 1000.0
    return Engine(llama, identity, settings.n_threads, round(load_ms, 3))


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine(settings: Settings) -> tuple[Engine, bool]:
    """The process-wide engine, loaded on first use; the flag says whether this call loaded it."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            return _engine, False
        _engine = load_engine(settings)
        return _engine, True


def loaded_engine() -> Engine | None:
    """The engine if this process has loaded it already."""
    return _engine
