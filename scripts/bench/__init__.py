"""Decode-speed benchmark on a Phi-3-mini-shaped model with random weights.

The model has Phi-3-mini's shapes and the default model's quantization: generated once in F16 and
quantized by llama.cpp's own quantizer to Q4_K_M, so its tensors have the types llama.cpp chooses
for the real model (Q4_K, Q6_K for the output and some layers' QKV and FFN-down matrices).

One run, on the same inputs (the first seed's summarize request, about 368 prompt tokens, and a
2,000-token input in the full run), each configuration in a fresh subprocess:

  a  the first seed's code: ``Llama(model_path, n_ctx=4096, seed=0)`` with library defaults
  b  this project's engine (``load_engine``, ``build_prompt``, ``generate``)
  c  raw ``llama_decode``: one token per step, greedy in llama.cpp's sampler, no Python in between
  d  the roofline: this machine's read bandwidth over the bytes read per decoded token
  e  batched decoding: K = 1, 2, 4, 8 sequences per ``llama_decode`` step in one context

All of them run the shipped build of llama.cpp (``layers/build/cmake-<arch>.args``, AVX2 on
x86_64). On an x86_64 host with AVX-512, (b) and (c) also run with the AVX-512 build
(``layers/build/cmake-amd64-avx512.args``, loaded through ``LLAMA_CPP_LIB_PATH``) in the same
repetitions: (b') and (c'), whose speeds over (b)'s and (c)'s decide whether an AVX-512 build is
worth shipping beside the AVX2 one. Every child records the build it loaded (llama.cpp's system
info and the library files mapped).

End-of-generation tokens are suppressed everywhere, so every configuration generates exactly
``max_tokens`` tokens on random weights. Prints a table and ratios; writes ``bench.json`` (all raw
numbers and the machine) and ``decode_vs_k.png`` to the output folder.

``--drafting`` measures prompt-lookup drafting instead (drafting.py): acceptance on real text with the
real test model, the cost of checking k drafted tokens on the bench model, the projection for Phi-3.

``--documents`` measures instead what text-first prompts and batched decoding give documents, in one
engine per comparison (one child process, its variants back to back): (a) one text of 2,000 tokens x 4
tasks as separate requests (an empty KV cache each), one after another (the engine's prefix reuse) and
batched with the text's prefix shared (``--unshared-batch``: also batched without sharing); (b) a
12,000-token text's map step, its chunk requests (``handler.usecases.preparation.split``) one at a time and batched.
Both count prompt tokens evaluated by llama.cpp's counters and by the engine's completions, and time
them; texts are cut from ``tests/data/moby-dick-chapters-1-9.txt``. Writes ``documents.json``.

(p) measures the cores' int8 dot-product peak with the instructions of each build's matrix kernel
(prefill_roofline.py): prefill's roofline, beside (c) and (c')'s prompt speed, as (d) is decode's.

``--engines`` measures ik_llama.cpp beside llama.cpp on both builds and model-file variants (side_by_side.py,
engine_apis.py); ``--menu`` each menu model's generated stand-in and its cost (menu.py, cost.py);
``python -m scripts.bench.profile`` where a prompt's time goes (Linux perf).

Usage: ``python -m scripts.bench [--quick] [--model PATH] [--out-dir bench-results] [--threads N]
[--no-compare-builds]``; ``python -m scripts.bench --documents [--quick] [--text-tokens N]
[--document-tokens N] [--doc-max-tokens N] [--unshared-batch] [--repeats N]``; ``python -m scripts.bench --drafting
[--quick]``

The package, by job: cli (the command line: options, and which run they choose), run_setup (what a run prepares
before its timed part), decode (the decode benchmark, (a)-(e)), sweep, drafting and documents (the other runs),
child (a child process's side: one configuration measured), measurements (what each configuration measures),
runner (spawning the children, the machine they ran on), configs (settings), model (the generated model and
inputs), report (table, ratios, plot), builds (the comparison build), prefill_roofline (with kernels/int8_dot.c),
side_by_side and engine_apis, menu and cost, profile; cold_start and load_probe measure the function image's cold
start.
"""
