import os

from piccolo.conf.apps import AppConfig, table_finder

CURRENT_DIRECTORY = os.path.dirname(os.path.abspath(__file__))

APP_CONFIG = AppConfig(
    app_name="recovery",
    migrations_folder_path=os.path.join(CURRENT_DIRECTORY, "piccolo_migrations"),
    table_classes=table_finder(modules=["backend.recovery.tables"], exclude_imported=True),
    migration_dependencies=["backend.accounts.piccolo_app", "backend.agents.piccolo_app"],
    commands=[],
)
