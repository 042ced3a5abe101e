"""The generated models' vocabulary and chat formats: SentencePiece pieces with byte fallback, laid out like Phi-3's.

random_model.py writes it into every model it generates, with Phi-3's special tokens, so llama.cpp tokenizes the
generated phi3 models through the same code as the real one. Models of other architectures get the same vocabulary
padded to their own size, with ChatML's two special tokens added: the tokenizer's kind does not change the speed
of a forward pass, only the number of rows of the embedding and output matrices does.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass, field

import gguf

PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# ChatML, as Qwen's and SmolLM2's instruct models use it, without any model's default system prompt.
CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Phi-3's added tokens, in its order (ids 32000..32010 in the real vocabulary).
PHI3_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
)


@dataclass(frozen=True)
class ChatFormat:
    """A chat template, the special tokens it needs beyond Phi-3's, and the token that ends a turn (EOS)."""

    template: str
    #: Control tokens added after Phi-3's: ids 32011 on in a vocabulary padded to a model's size.
    added_specials: tuple[str, ...]
    eos: str


PHI3_CHAT = ChatFormat(PHI3_CHAT_TEMPLATE, (), "<|endoftext|>")
CHATML_CHAT = ChatFormat(CHATML_CHAT_TEMPLATE, ("<|im_start|>", "<|im_end|>"), "<|im_end|>")

SPM_SPACE = "\u2581"  # "▁": SentencePiece's marker for a preceding space

# Common English words (each becomes a "▁word" piece) and word endings, as whitespace-separated text.
COMMON_WORDS = """
the of and to in is was for on that with as by at from it be are this an or which his
her he she they we you not but have had has were their been one all would there can more
if no out so what up about when into than them its only some other time new also two
first may after over most such these used many then any where made well between could
through before because each very those both under year years people state world day
how our way even back good much work life part great still own see make use just long
last high little small large old right left man men woman women child children water
city house home school name number system data model models text language word words
token tokens generate generated generation request response service function value
values result results test tests example input output server client error errors
question answer hello world please thank thanks help write read list story poem
Gradient Descent gradient descent learning machine neural network train training loss
function optimization parameter parameters step rate weight weights update minimum
explain simple simply step steps three four five ten hundred thousand number numbers
cloud Lambda lambda memory timeout batch job jobs queue table record records sentence
short summary summarize translate Japanese English French code Python program
"""

COMMON_SUFFIXES = """
ing ed er ers es ly tion tions ment ness able al ity ous ive est ful less ize ise
th he in an re on at en nd ti or te of is it ar st to
"""


# Size of Phi-3's SentencePiece model: its added tokens start here, then padding up to n_vocab.
SPM_VOCAB_SIZE = 32000


@dataclass
class Vocab:
    """A SentencePiece vocabulary as the three parallel GGUF arrays."""

    tokens: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    types: list[gguf.TokenType] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)

    def add(self, text: str, score: float, token_type: gguf.TokenType) -> None:
        """Append a token unless its text is already there."""
        if text not in self.ids:
            self.ids[text] = len(self.tokens)
            self.tokens.append(text)
            self.scores.append(score)
            self.types.append(token_type)


def _normal_pieces() -> Iterator[str]:
    """Normal pieces, each preceded by its prefixes.

    llama.cpp's SPM tokenizer only merges adjacent symbols whose concatenation is itself a
    piece, so a long piece is reachable only if a chain of shorter ones leads to it.
    """
    yield SPM_SPACE
    for c in string.printable[:94]:  # the printable ASCII characters except whitespace
        yield c
        yield SPM_SPACE + c
    for piece in [SPM_SPACE + w for w in COMMON_WORDS.split()] + COMMON_SUFFIXES.split():
        for end in range(2, len(piece) + 1):
            yield piece[:end]


def build_vocab(n_vocab: int | None = None, added_specials: tuple[str, ...] = ()) -> Vocab:
    """Byte-fallback vocabulary laid out like Phi-3's: unk, bos, eos, bytes, pieces, specials.

    With ``n_vocab``, the ids match Phi-3's exactly: synthetic pieces fill up to id 32000, the
    specials take 32000-32010, ``added_specials`` (CONTROL) the next ids, and ``[PAD{id}]`` tokens
    (UNUSED, as llama.cpp's converter writes them for Phi-3) fill the rest.
    """
    vocab = Vocab()
    vocab.add("<unk>", 0.0, gguf.TokenType.UNKNOWN)
    vocab.add("<s>", 0.0, gguf.TokenType.CONTROL)
    vocab.add("</s>", 0.0, gguf.TokenType.CONTROL)
    for byte in range(256):
        vocab.add(f"<0x{byte:02X}>", 0.0, gguf.TokenType.BYTE)
    for piece in _normal_pieces():
        # Merges with higher scores happen first, so longer pieces win.
        vocab.add(piece, float(len(piece)), gguf.TokenType.NORMAL)
    if n_vocab is not None:
        if n_vocab < SPM_VOCAB_SIZE + len(PHI3_SPECIAL_TOKENS) + len(added_specials):
            raise ValueError(f"n_vocab {n_vocab} leaves no room for the special tokens at {SPM_VOCAB_SIZE}")
        # "▁w{n}" is reachable by merges: "▁w" is a piece, and "▁w{n // 10}" comes before it.
        filler = (SPM_SPACE + f"w{n}" for n in range(SPM_VOCAB_SIZE))
        while len(vocab.tokens) < SPM_VOCAB_SIZE:
            piece = next(filler)
            vocab.add(piece, float(len(piece)), gguf.TokenType.NORMAL)
    for special in PHI3_SPECIAL_TOKENS + added_specials:
        vocab.add(special, 0.0, gguf.TokenType.CONTROL)
    if n_vocab is not None:
        for token_id in range(len(vocab.tokens), n_vocab):
            vocab.add(f"[PAD{token_id}]", -10000.0, gguf.TokenType.UNUSED)
    return vocab
