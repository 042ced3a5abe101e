"""Docker helpers: a Docker engine for the local targets (engine.sh), the linux/arm64 image built and checked
under emulation (``python -m scripts.docker.arm64_check``)."""
