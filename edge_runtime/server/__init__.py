"""HTTP server: Custom Vision compatible prediction routes plus live views."""

from .app import create_app
from .state import Services

__all__ = ["Services", "create_app"]
