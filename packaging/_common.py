"""Shared by the PyInstaller specs (``backapp-agent.spec``, ``backapp-tray.spec``): the version, the
hidden imports the frozen programs need, and what to keep out of them.

The specs run inside PyInstaller (``python packaging/build.py`` or ``pyinstaller packaging/X.spec``);
this module imports only the standard library and PyInstaller's hook helpers.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

from PyInstaller.utils.hooks import collect_submodules, copy_metadata

PACKAGING = Path(__file__).resolve().parent
ROOT = PACKAGING.parent


#: Set by ``build.py --version``: the version to build, instead of ``pyproject.toml``'s.
VERSION_ENV = "BACKAPP_BUILD_VERSION"

#: The file (beside ``desktop_agent/__init__.py`` in the build) the frozen programs read their
#: version from: ``desktop_agent.FROZEN_VERSION_FILE``.
FROZEN_VERSION_FILE = "_frozen_version.txt"


def version() -> str:
    """The version to build (what ``--version`` prints once frozen): ``$BACKAPP_BUILD_VERSION``,
    else the package version from ``pyproject.toml``."""
    override = os.environ.get(VERSION_ENV, "").strip()
    if override:
        return override
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def version_datas(workpath: str) -> list[tuple[str, str]]:
    """The version file for the build, written into PyInstaller's work folder. A frozen program
    reads it rather than the package metadata, which names the build machine's installed version."""
    folder = Path(workpath) / "version"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FROZEN_VERSION_FILE).write_text(version() + "\n", encoding="utf-8")
    return [(str(folder / FROZEN_VERSION_FILE), "desktop_agent")]


def version_tuple() -> tuple[int, int, int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in version().split(".")[:4]]
    return tuple((parts + [0, 0, 0, 0])[:4])  # type: ignore[return-value]


def _optional(*modules: str) -> list[str]:
    found = []
    for name in modules:
        try:
            __import__(name)
        except Exception:
            continue
        found.append(name)
    return found


def engine_hidden_imports() -> list[str]:
    """What the engine loads by name at run time, which PyInstaller's analysis cannot see.

    keyring finds its backends through entry points (the metadata is copied by ``engine_datas``) and
    imports each one by name; the Linux Secret Service backend needs secretstorage + jeepney, the
    Windows one pywin32-ctypes. zstandard picks its C backend at import time. pyfastcdc's compiled
    chunker imports its compiled constants from C (without them it falls back, with a warning, to
    its pure-Python chunker). The engine's package
    imports each of its names' modules on first use (``desktop_agent.engine._EXPORTS``).
    """
    hidden = collect_submodules("desktop_agent.engine")
    hidden += collect_submodules("keyring.backends")
    hidden += ["zstandard", "zstandard.backend_c", "croniter", "httpx", "certifi", "h11"]
    hidden += collect_submodules("pyfastcdc")
    hidden += collect_submodules("websockets", filter=lambda name: name != "websockets.cli")
    hidden += _optional("zoneinfo", "tzdata")
    if sys.platform.startswith("linux"):
        hidden += _optional("secretstorage", "jeepney")
        hidden += collect_submodules("jeepney") if "jeepney" in hidden else []
    if sys.platform == "win32":
        hidden += _optional("win32ctypes.core", "win32ctypes.pywin32")
    return sorted(set(hidden))


def agent_hidden_imports() -> list[str]:
    """The engine's, and the command modules of ``backapp-agent``: its parser names each command's
    function as ``"module:function"``, imported only when that command runs."""
    return sorted(set(engine_hidden_imports() + collect_submodules("desktop_agent.cli")))


def engine_datas() -> list[tuple[str, str]]:
    """Package metadata read at run time: ``backapp`` (``--version``) and keyring (its backends are
    entry points)."""
    datas: list[tuple[str, str]] = copy_metadata("backapp") + copy_metadata("keyring")
    for name in ("certifi", "httpx", "websockets", "croniter", "zstandard"):
        try:
            datas += copy_metadata(name)
        except Exception:
            pass
    return datas


#: Never in either build: the server side, test tools, other GUI toolkits.
COMMON_EXCLUDES = [
    "backend",
    "piccolo",
    "piccolo_conf",
    "litestar",
    "uvicorn",
    "boto3",
    "botocore",
    "s3transfer",
    "moto",
    "pytest",
    "_pytest",
    "playwright",
    "mypy",
    "ruff",
    "tkinter",
    "_tkinter",
    "IPython",
    "matplotlib",
    "numpy",
    "pandas",
    "PIL",
    "redis",
    "asyncpg",
    "psycopg",
    "jinja2",
    # pulled in by optional imports (httpx's CLI, anyio's trio backend, setuptools' runtime hooks…)
    "httpx._main",
    "rich",
    "pygments",
    "markdown_it",
    "mdurl",
    "click",
    "trio",
    "outcome",
    "sortedcontainers",
    "uvloop",
    "werkzeug",
    "flask",
    "yaml",
    "zstandard.backend_cffi",
    "websockets.cli",
    "setuptools",
    "pkg_resources",
    "distutils",
    "_distutils_hack",
    "pluggy",
    "pytest_asyncio",
    "colorama",
]

#: Qt modules the tray app does not use (PySide6-Essentials ships them; keep them out of the build).
UNUSED_QT = [
    "PySide6.QtWebEngineCore",
    "PySide6.QtWebEngineWidgets",
    "PySide6.QtWebEngineQuick",
    "PySide6.QtWebChannel",
    "PySide6.QtWebSockets",
    "PySide6.QtQml",
    "PySide6.QtQuick",
    "PySide6.QtQuickWidgets",
    "PySide6.QtQuickControls2",
    "PySide6.QtQuick3D",
    "PySide6.QtSql",
    "PySide6.QtTest",
    "PySide6.QtOpenGL",
    "PySide6.QtOpenGLWidgets",
    "PySide6.QtPdf",
    "PySide6.QtPdfWidgets",
    "PySide6.QtPrintSupport",
    "PySide6.QtSvg",
    "PySide6.QtSvgWidgets",
    "PySide6.QtXml",
    "PySide6.QtConcurrent",
    "PySide6.QtDesigner",
    "PySide6.QtUiTools",
    "PySide6.QtHelp",
    "PySide6.QtMultimedia",
    "PySide6.QtMultimediaWidgets",
    "PySide6.QtNetworkAuth",
    "PySide6.QtPositioning",
    "PySide6.QtSerialPort",
    "PySide6.QtStateMachine",
    "PySide6.QtCharts",
    "PySide6.QtDataVisualization",
    "PySide6.Qt3DCore",
    "PySide6.QtBluetooth",
    "PySide6.QtNfc",
    "PySide6.QtRemoteObjects",
    "PySide6.QtScxml",
    "PySide6.QtSensors",
    "PySide6.QtSpatialAudio",
    "PySide6.QtTextToSpeech",
    "PySide6.QtHttpServer",
    "PySide6.QtGraphs",
]

#: The Qt platform plugins the tray app must carry: the desktop's own, plus ``offscreen`` (tests,
#: headless start) and, on Linux, ``xcb`` and ``wayland``.
QT_PLATFORM_PLUGINS = {
    "linux": ["offscreen", "minimal", "xcb", "wayland", "wayland-egl"],
    "darwin": ["cocoa", "offscreen", "minimal"],
    "win32": ["windows", "offscreen", "minimal"],
}


def qt_platform_plugins() -> list[tuple[str, str]]:
    """The platform plugins, declared explicitly (PyInstaller's Qt hook collects them too; this makes
    a missing one fail the build rather than the first start on a user's machine)."""
    from PyInstaller.utils.hooks.qt import pyside6_library_info

    key = "linux" if sys.platform.startswith("linux") else sys.platform
    plugins_dir = Path(pyside6_library_info.location["PluginsPath"]) / "platforms"
    dest = str(Path(pyside6_library_info.qt_rel_dir) / "plugins" / "platforms")
    found: list[tuple[str, str]] = []
    for name in QT_PLATFORM_PLUGINS.get(key, []):
        matches = [
            p
            for p in plugins_dir.glob(f"*q{name}.*")
            if p.suffix in (".so", ".dylib", ".dll") and p.stem.removeprefix("lib") == f"q{name}"
        ]
        if not matches and name in ("offscreen", "xcb", "cocoa", "windows"):
            raise SystemExit(f"the Qt platform plugin '{name}' is missing from {plugins_dir}")
        found += [(str(p), dest) for p in matches]
    return found


def windows_version_file(name: str, description: str) -> object | None:
    """The Windows version resource (Explorer's *Details* tab), stamped with the package version;
    ``None`` elsewhere."""
    if sys.platform != "win32":
        return None
    from PyInstaller.utils.win32 import versioninfo as vi

    numbers = version_tuple()
    strings = [
        vi.StringStruct("CompanyName", "BackApp"),
        vi.StringStruct("FileDescription", description),
        vi.StringStruct("FileVersion", version()),
        vi.StringStruct("InternalName", name),
        vi.StringStruct("OriginalFilename", f"{name}.exe"),
        vi.StringStruct("ProductName", "BackApp"),
        vi.StringStruct("ProductVersion", version()),
    ]
    return vi.VSVersionInfo(
        ffi=vi.FixedFileInfo(filevers=numbers, prodvers=numbers),
        kids=[
            vi.StringFileInfo([vi.StringTable("040904B0", strings)]),
            vi.VarFileInfo([vi.VarStruct("Translation", [1033, 1200])]),
        ],
    )


#: Parts of Qt that PyInstaller's hooks collect but the tray app never loads (paths inside the build,
#: matched as prefixes after ``PySide6/Qt/``). The GTK platform theme is the big one: it drags in the
#: build machine's whole GTK stack (~25 MiB) and is only a look, Qt's own style replaces it.
QT_PRUNE = [
    "plugins/platformthemes/libqgtk3",
    "plugins/egldeviceintegrations/",
    "plugins/generic/",
    "plugins/networkinformation/",
    "plugins/platforms/libqeglfs",
    "plugins/platforms/libqlinuxfb",
    "plugins/platforms/libqminimalegl",
    "plugins/platforms/libqvkkhrdisplay",
    "plugins/platforms/libqvnc",
    "plugins/platforms/qdirect2d",
    "plugins/imageformats/libqtiff",
    "plugins/imageformats/libqwebp",
    "plugins/imageformats/libqicns",
    "plugins/imageformats/libqtga",
    "plugins/imageformats/libqwbmp",
    "plugins/imageformats/qtiff",
    "plugins/imageformats/qwebp",
    "plugins/imageformats/qtga",
    "plugins/imageformats/qwbmp",
    "plugins/wayland-graphics-integration-client/libdmabuf-server",
    "plugins/wayland-graphics-integration-client/libdrm-egl-server",
    "plugins/wayland-graphics-integration-client/libshm-emulation-server",
    "plugins/wayland-graphics-integration-client/libvulkan-server",
    "translations/",
    "lib/libQt6EglFSDeviceIntegration",
    "lib/libQt6EglFsKmsSupport",
]


def prune_qt(toc: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """``toc`` without the Qt parts in ``QT_PRUNE`` nor what only they needed (the GTK stack)."""
    prefixes = tuple(f"PySide6/Qt/{p}" for p in QT_PRUNE)
    gtk_only = (
        "libgtk-3",
        "libgdk-3",
        "libatk-",
        "libatspi",
        "libcairo",
        "libpango",
        "libgdk_pixbuf",
        "libepoxy",
        "libharfbuzz",
        "libthai",
        "libdatrie",
        "libfribidi",
        "libgraphite2",
        "libpixman",
        "libXcomposite",
        "libXdamage",
        "libXinerama",
        "libXcursor",
        "libXi.",
        "libXrandr",
        "libjpeg",
    )
    kept = []
    for entry in toc:
        dest = entry[0].replace("\\", "/")
        if dest.startswith(prefixes):
            continue
        if sys.platform.startswith("linux") and "/" not in dest and dest.startswith(gtk_only):
            continue
        kept.append(entry)
    return kept


#: Strip symbols from the bundled libraries on Linux (pyenv's and the wheels' libraries carry debug
#: symbols: libpython alone drops from 23 to 4 MiB). Elsewhere stripping would break code signatures.
STRIP = sys.platform.startswith("linux")
