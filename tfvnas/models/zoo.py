"""The genotype zoo: published DARTS-space cells bundled in `tfvnas/genotypes/`, and `load_genotype`.

A zoo name is the stem of a JSON file in `tfvnas/genotypes/` (`darts_v2`,
`pc_darts`, ...); each file holds the genotype and a `source` object saying
where it was published. `load_genotype` resolves a zoo name, a genotype file
or a search folder, in that order.

References:
    - Liu et al., 2019. DARTS (https://arxiv.org/abs/1806.09055)
    - Xu et al., 2020. PC-DARTS (https://arxiv.org/abs/1907.05737)
    - Chen et al., 2021. DrNAS (https://arxiv.org/abs/2006.10355)
"""

from __future__ import annotations

import importlib.resources as resources
import os
from collections.abc import Mapping
from typing import Any

from tfvnas.models import genotype as genotype_lib

__all__ = ["canonical_name", "load_genotype", "zoo_entry", "zoo_names"]

_ZOO_PACKAGE = "tfvnas.genotypes"
_ZOO_SOURCE_KEYS = (
    "paper",
    "authors",
    "year",
    "arxiv",
    "url",
    "repository",
    "file",
    "variable",
    "dataset",
    "test_error_percent",
    "params_millions",
)
_GENOTYPE_FILE = "genotype.json"
_ZOO_SPELLING = "case-insensitive; '-' and '_' are interchangeable"


def _zoo_files():
    # importlib.resources rather than __file__, so that it works from a wheel
    # or a zip as well as from a source checkout.
    return resources.files(_ZOO_PACKAGE)


def canonical_name(name: str) -> str:
    return name.lower().replace("-", "_")


def zoo_names() -> list[str]:
    """Returns the names of the bundled published cells, sorted.

    A name is the stem of a JSON file in `tfvnas/genotypes/`, such as
    `"darts_v2"`; `tfvnas/genotypes/README.md` lists them with their sources.
    """
    return sorted(
        entry.name[: -len(".json")]
        for entry in _zoo_files().iterdir()
        if entry.is_file() and entry.name.endswith(".json")
    )


def _split_source(data: Any, where: str, *, required: bool):
    """Returns `(genotype_part, source)` of a parsed genotype JSON object.

    The genotype part is left for `genotype_lib.Genotype.from_dict`, which checks its keys
    strictly; `source` is `None` if absent and not `required`.
    """
    if not isinstance(data, Mapping) or "source" not in data:
        if required:
            raise ValueError(
                f"{where} must be a JSON object with the genotype keys "
                f"{list(genotype_lib.GENOTYPE_KEYS)} and a `source` object. "
                f"Received: {genotype_lib.short_repr(data)}"
            )
        return data, None
    source = data["source"]
    if not isinstance(source, Mapping):
        raise ValueError(
            f"In {where}, `source` must be a JSON object. "
            f"Received: source={genotype_lib.short_repr(source)}"
        )
    missing = [k for k in _ZOO_SOURCE_KEYS if k not in source]
    if required and missing:
        raise ValueError(
            f"In {where}, `source` must have the keys {list(_ZOO_SOURCE_KEYS)}. "
            f"Received keys: {sorted(source, key=str)} (missing: {missing})"
        )
    return {k: v for k, v in data.items() if k != "source"}, dict(source)


def zoo_entry(name: str) -> tuple[genotype_lib.Genotype, dict[str, Any]]:
    """Returns a bundled published cell and where it comes from.

    Example:

    >>> genotype, source = zoo_entry("pc-darts")
    >>> source["variable"], source["test_error_percent"]
    ('PCDARTS', 2.57)

    Args:
        name: A name from `zoo_names()`; case is ignored and `-` reads as `_`
            (`"DARTS_V2"`, `"pc-darts"`).

    Returns:
        `(genotype, source)`. The genotype's structure, input indices and
        concat are checked; its op names are the DARTS ones, so check them
        with `genotype.validate(op_names)` against the op set in use. `source`
        is a new dict with at least the keys `paper`, `authors`, `year`,
        `arxiv`, `url`, `repository`, `file`, `variable` (the name in that
        file), `dataset`, `test_error_percent` and `params_millions` (as
        reported by the paper).

    Raises:
        ValueError: If `name` is not a zoo name.
    """
    names = zoo_names()
    key = canonical_name(name) if isinstance(name, str) else None
    if key not in names:
        raise ValueError(
            f"`name` must be the name of a zoo genotype, one of {names} "
            f"({_ZOO_SPELLING}). Received: name={name!r}"
        )
    where = f"zoo genotype file 'tfvnas/genotypes/{key}.json'"
    text = _zoo_files().joinpath(f"{key}.json").read_text(encoding="utf-8")
    body, source = _split_source(genotype_lib.parse_json(text, where), where, required=True)
    try:
        genotype = genotype_lib.Genotype.from_dict(body)
        # Which op names are allowed depends on the caller's op set; indices
        # and concat do not, so they are checked here.
        genotype.validate(genotype.op_histogram())
    except ValueError as e:
        raise ValueError(f"Invalid {where}: {e}") from e
    return genotype, source


def load_genotype(name_or_path: str | os.PathLike) -> genotype_lib.Genotype:
    """Loads a genotype from the zoo, a JSON file or a run directory.

    `name_or_path` is, in this order:

    1. a zoo name (see `zoo_names()`; case is ignored and `-` reads as `_`,
       so `"darts_v2"`, `"DARTS_V2"` and `"pc-darts"` all work). A zoo name
       wins over a relative path spelled the same; write `"./darts_v2"` for
       the path.
    2. the path of a genotype JSON file, as written by `genotype_lib.Genotype.save` (for
       example the `genotype.json` a search writes). A `source` object, as in
       the zoo files, is allowed and ignored; the other keys are checked
       strictly.
    3. the path of a directory holding `genotype.json` (a search's output
       directory).

    Example:

    >>> load_genotype("darts_v2").nodes
    4

    Args:
        name_or_path: A zoo name, or a path as a str or `os.PathLike`.

    Returns:
        A `Genotype`. A zoo cell is checked as by `zoo_entry`; a file is
        structure-checked only, as by `genotype_lib.Genotype.load`, so call `validate()`
        to check its op names and indices.

    Raises:
        ValueError: If `name_or_path` is not a str or path; is not a zoo name
            and nothing exists at that path; is a directory without
            `genotype.json`; or names a file that is not valid JSON or not a
            genotype (the message names the file).
    """
    if isinstance(name_or_path, str) and canonical_name(name_or_path) in zoo_names():
        return zoo_entry(name_or_path)[0]
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(
            "`name_or_path` must be a zoo genotype name or a path (str or "
            f"os.PathLike). Received: name_or_path={genotype_lib.short_repr(name_or_path)}"
        )
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        directory, path = path, os.path.join(path, _GENOTYPE_FILE)
        if not os.path.isfile(path):
            raise ValueError(
                f"`name_or_path` is a directory, so it must hold a "
                f"{_GENOTYPE_FILE} file. Received: name_or_path={directory!r}, "
                f"which has no {_GENOTYPE_FILE}"
            )
    elif not os.path.isfile(path):
        raise ValueError(
            f"`name_or_path` must be a zoo genotype name, one of {zoo_names()} "
            f"({_ZOO_SPELLING}), or the path of a genotype JSON file or of a "
            f"directory holding {_GENOTYPE_FILE}. Received: "
            f"name_or_path={path!r}, which is not a zoo name, and that path "
            "does not exist"
        )
    where = f"Genotype file {path!r}"
    body, _ = _split_source(genotype_lib.read_genotype_file(path), where, required=False)
    try:
        return genotype_lib.Genotype.from_dict(body)
    except ValueError as e:
        raise ValueError(f"Invalid genotype file {path!r}: {e}") from e
