"""The quality harness: model-file variants of the real model measured against the file they came from.

``python -m scripts.eval.quant`` (``make eval-quant``) writes the variants (``variants``), reads the shipped text
(``text``), compares the variants' next-token distributions with the source file's window by window (``logits``,
with the maths in ``divergence``), generates the seed events' greedy answers through the service's engine
(``answers``) and writes the table beside llama.cpp's published figures (``published``, ``report``).
"""
