"""The uvicorn settings ``clipdex serve`` runs with (the tests serve through the same function)."""

from __future__ import annotations

import copy
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG


def log_config() -> dict[str, Any]:
    """uvicorn's logging, plus the ``clipdex`` loggers (tracebacks of internal errors) on its stderr handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["clipdex"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def uvicorn_config(app: Any, *, log_level: str = "info", access_log: bool = True) -> uvicorn.Config:
    """A uvicorn configuration for the clipdex app."""
    return uvicorn.Config(app, log_level=log_level, access_log=access_log, server_header=False,
                          log_config=log_config())
