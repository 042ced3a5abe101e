"""The image's build steps, also run on a development machine: llama.cpp compiled with the image's flags
(llama.py) and the Lambda task root assembled (task_root.py). The Dockerfile copies this folder.
"""
