"""What every request handler needs, built once per app: config, store and the RQ queue."""

from __future__ import annotations

from dataclasses import dataclass

import rq
from flask import current_app

from ..config import Config
from ..store import Store


@dataclass(frozen=True)
class Services:
    config: Config
    store: Store
    queue: rq.Queue


def services() -> Services:
    return current_app.extensions["mirage"]
