"""``python -m scripts.bench``: the benchmark's command line (cli.py)."""

from scripts.bench.cli import main

raise SystemExit(main())
