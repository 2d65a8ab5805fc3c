"""Launch parameters: check what a user filled in against what the app declares.

Shared by the CLI, the API and the launcher form, so all three accept and refuse the same things.
"""

from __future__ import annotations

from collections.abc import Mapping

from .config import Parameter


def problems(declared: Mapping[str, Parameter], given: Mapping[str, str]) -> dict[str, str]:
    """Problems by parameter name: unknown names, missing required ones, broken options or rules."""
    found = {name: "is not a parameter of this app" for name in given if name not in declared}
    for name, param in declared.items():
        problem = param.check(given.get(name, param.default))
        if problem:
            found[name] = problem
    return found


def resolve(declared: Mapping[str, Parameter], given: Mapping[str, str]) -> dict[str, str]:
    """The values a deploy runs with: defaults, overridden by what was given (empty means default)."""
    merged = {name: p.default for name, p in declared.items() if p.default is not None}
    merged.update({k: v for k, v in given.items() if v != ""})
    return merged
