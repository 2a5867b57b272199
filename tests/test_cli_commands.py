"""The CLI's lazily imported subcommands (retrieval.cli.common.COMMANDS) are all the commands there are."""

from __future__ import annotations

import importlib
import pkgutil

import retrieval.cli
from retrieval.cli.common import COMMANDS, cli


def test_every_command_is_in_the_lazy_map_and_each_entry_names_its_module():
    for info in pkgutil.iter_modules(retrieval.cli.__path__):
        if info.name == "__main__":
            continue
        importlib.import_module(f"retrieval.cli.{info.name}")  # each registers its commands on `cli`
    assert set(cli.commands) == set(COMMANDS), "add a new command to retrieval.cli.common.COMMANDS"
    for name, module in COMMANDS.items():
        assert cli.commands[name].callback.__module__ == f"retrieval.cli.{module}", name
