"""No product module over 600 lines (Piccolo migrations aside): a module that long holds more than one
concern, and a newcomer can no longer name what it is for. Split by concern, not by line count."""

from __future__ import annotations

from pathlib import Path

from tests.support.paths import ROOT

PACKAGES = ("backend", "desktop_agent")
LIMIT = 600


def too_long(root: Path, limit: int = LIMIT) -> dict[str, int]:
    """Dotted module name → line count, for every module of the packages longer than ``limit``."""
    found: dict[str, int] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "piccolo_migrations" in path.parts or "__pycache__" in path.parts:
                continue
            count = len(path.read_text(encoding="utf-8").splitlines())
            if count > limit:
                found[".".join(path.relative_to(root).with_suffix("").parts)] = count
    return found


def test_no_product_module_is_over_600_lines() -> None:
    assert too_long(ROOT) == {}


def test_the_size_check_sees_what_it_should(tmp_path: Path) -> None:
    (tmp_path / "backend" / "piccolo_migrations").mkdir(parents=True)
    (tmp_path / "backend" / "__init__.py").write_text("")
    (tmp_path / "backend" / "short.py").write_text("x = 1\n" * 600)
    (tmp_path / "backend" / "long.py").write_text("x = 1\n" * 601)
    (tmp_path / "backend" / "piccolo_migrations" / "m.py").write_text("x = 1\n" * 900)
    assert too_long(tmp_path) == {"backend.long": 601}
