"""Model folders that ship inside appkit (package data): see each folder's README.md."""
from pathlib import Path

MODELS_DIR = Path(__file__).parent
