"""he-inhibitor: private sentiment inference under CKKS for an inhibitor-attention student."""

__version__ = "0.1.0"
