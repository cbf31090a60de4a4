"""Loaders for pretrained weights that do not arrive as transformers folders.

Each module here turns such weights into an ordinary transformers model
(``save_pretrained`` / ``from_pretrained``, safetensors), so the rest of appkit
treats every backbone the same way.
"""
