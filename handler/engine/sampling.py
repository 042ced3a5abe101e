"""A request's sampling as llama.cpp's own sampler chain: grammar, penalties, then greedy or random choice.

Sampling runs in llama.cpp: no logits cross into Python. Both decoders build one chain per request.
"""

from __future__ import annotations

from typing import Any

from handler.core.errors import GenerationError
from handler.domain.requests import GenerationOptions
from handler.engine.grammar import grammar_sampler
from handler.engine.tokenizer import Tokenizer
from handler.formats.json_output import grammar


def sampler_chain(lib: Any, tokenizer: Tokenizer, options: GenerationOptions, ignore_eos: bool) -> Any:
    """The sampler chain for ``options`` (the caller frees it); ``ignore_eos`` bans the end-of-generation tokens."""
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    rules = grammar(options.response_format)
    if rules is not None:
        # First in the chain: every later sampler chooses among the tokens the grammar allows.
        constrained = grammar_sampler(lib, tokenizer.vocab, rules)
        if constrained is None:
            lib.llama_sampler_free(chain)
            raise GenerationError("llama.cpp could not parse the grammar made from the response format")
        lib.llama_sampler_chain_add(chain, constrained)
    if ignore_eos:
        biases = (lib.llama_logit_bias * len(tokenizer.eog_ids))(
            *(lib.llama_logit_bias(token, float("-inf")) for token in tokenizer.eog_ids)
        )
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_logit_bias(tokenizer.n_vocab, len(biases), biases))
    if options.repeat_penalty != 1.0:
        lib.llama_sampler_chain_add(
            chain, lib.llama_sampler_init_penalties(tokenizer.n_vocab, 64, options.repeat_penalty, 0.0, 0.0)
        )
    if options.temperature == 0.0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
    else:
        # llama-cpp-python's defaults around temperature and top_p, so sampled output is comparable.
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(40))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(options.top_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(0.05, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(options.temperature))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(options.seed))
    return chain
