"""Everything that computes: configs, data, models, training stages, runs, inference, the CLI.

Kept light on purpose: importing `pipelines` (or any module the UI imports) must not import
torch, transformers or trl. Heavy imports live inside the functions that need them.
"""

__version__ = "0.1.0"
