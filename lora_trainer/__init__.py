"""Train LoRA: a kohya-style LoRA trainer for the model a Stable Diffusion webui already has loaded.

The engine is importable without the webui and without a GPU; heavy imports (torch models, open_clip,
transformers) happen inside the submodules that need them.
"""

__version__ = "0.1.0"
