"""Piccolo's configuration: the engine comes from ``DATABASE_URL`` (see backend/settings.py)."""

from piccolo.conf.apps import AppRegistry

from backend.db import APP_MODULES, make_engine
from backend.settings import get_settings

DB = make_engine(get_settings().database_url)

APP_REGISTRY = AppRegistry(apps=APP_MODULES)
