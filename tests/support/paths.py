"""Where things are: the repository's root, for tests that run its programs or read its files."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
