"""The web app: webhooks, the dashboard, the REST API and the job log pages."""

from .app import create_app

__all__ = ["create_app"]
