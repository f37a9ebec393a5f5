"""HTTP server: Custom Vision compatible prediction routes plus live views."""

from .app import GracefulServer, create_app, server_config
from .state import Services

__all__ = ["GracefulServer", "Services", "create_app", "server_config"]
