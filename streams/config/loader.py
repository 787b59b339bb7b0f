"""Loading the rule set from a directory: ``rules.yaml`` (named lists and rules) and ``scoring.yaml``
(bands, boosters). The files are read and parsed here; ``streams.core.ruleset`` compiles them.

Which directory: ``resolve_rules_dir`` decides it for every command, and ``copy_bundled_rules`` makes an
editable copy of the rules shipped in the package (``modwatch rules init DIR``).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from streams.core.incident_config import IncidentsConfig, build_incidents_config
from streams.core.ruleset import ConfigError, RuleSet, build_ruleset

__all__ = [
    "INCIDENTS_FILE",
    "RULES_FILE",
    "SCORING_FILE",
    "ConfigError",
    "IncidentsConfig",
    "RuleSet",
    "bundled_rules_dir",
    "copy_bundled_rules",
    "load_incidents",
    "load_rules",
    "read_yaml_file",
    "resolve_rules_dir",
]

RULES_FILE = "rules.yaml"
SCORING_FILE = "scoring.yaml"
INCIDENTS_FILE = "incidents.yaml"
FIXTURES_DIR = "fixtures"
CONFIG_ENV = "MODWATCH_CONFIG"
LOCAL_CONFIG = "config"


def bundled_rules_dir() -> Path:
    """The rules, scoring and fixtures shipped inside the package (``streams/config/defaults``)."""
    return Path(__file__).resolve().parent / "defaults"


def resolve_rules_dir(given: str | os.PathLike[str] | None = None, settings_dir: str | None = None, *,
                      environ: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                      notify: Callable[[str], object] | None = None) -> Path:  # fmt: skip
    """The rules directory a command uses, first that applies:

    1. ``given`` (``--config DIR``),
    2. ``$MODWATCH_CONFIG``,
    3. ``settings_dir``: a ``rules_dir`` the service settings set explicitly (the worker's file or
       ``$MODWATCH_RULES_DIR``),
    4. ``./config`` when it holds a ``rules.yaml`` (a checkout, or a copy made by ``modwatch rules init``),
    5. the bundled defaults (``bundled_rules_dir()``), and then ``notify`` gets the one line that tells
       the user so (the command line prints it on stderr).

    A directory named by 1-3 is returned as it is, even if it does not exist: ``load_rules`` then says so,
    as a named directory that is missing is an error, never a reason to fall back.
    """
    env = os.environ if environ is None else environ
    for named in (given, env.get(CONFIG_ENV) or None, settings_dir):
        if named is not None:
            return Path(named)
    local = Path(cwd or ".") / LOCAL_CONFIG
    if (local / RULES_FILE).is_file():
        return Path(LOCAL_CONFIG) if cwd is None else local
    bundled = bundled_rules_dir()
    if notify is not None:
        notify(f"modwatch: using the bundled rules ({bundled}); 'modwatch rules init DIR' copies them for editing")
    return bundled


def copy_bundled_rules(dest: str | Path, force: bool = False) -> list[Path]:
    """Copy the bundled ``rules.yaml``, ``scoring.yaml`` and ``fixtures/`` into ``dest`` (created if
    missing); returns the files written. Raises ConfigError, before writing anything, when one of them
    exists already and ``force`` is false."""
    source, target = bundled_rules_dir(), Path(dest)
    files = [Path(RULES_FILE), Path(SCORING_FILE), Path(INCIDENTS_FILE)]
    files += sorted(p.relative_to(source) for p in (source / FIXTURES_DIR).glob("*.yaml"))
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target}: not a directory")
    existing = [str(target / f) for f in files if (target / f).exists()]
    if existing and not force:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise ConfigError(f"{shown}: already exists; give --force to overwrite")
    written = []
    try:
        for rel in files:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, target / rel)
            written.append(target / rel)
    except OSError as exc:
        raise ConfigError(f"{exc.filename or target}: cannot write: {exc.strerror or exc}") from None
    return written


# Limits on a YAML file the loader reads: a rules file is a few KB. A link to /dev/zero, a FIFO or a
# file of gigabytes is refused before it is read, and nested aliases (a "billion laughs") are refused
# once their expansion would pass MAX_YAML_NODES, before anything walks the expanded document.
MAX_YAML_BYTES = 1024 * 1024
MAX_YAML_NODES = 100_000


def read_yaml_file(path: str | os.PathLike[str], what: str = "file") -> Any:
    """The parsed YAML document in ``path`` (None when empty), read with the limits above. Raises
    ConfigError naming the file: missing (``no such {what}``), not a regular file after resolving
    links, over MAX_YAML_BYTES, invalid YAML, nested too deeply, or aliases expanding too far."""
    path = Path(path)
    try:
        info = os.stat(path)  # follows links: a link to a regular file is fine
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if info.st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES} bytes")
        with path.open("rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced since the stat
                raise ConfigError(f"{path}: not a regular file")
            data = fh.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node)
        if size > MAX_YAML_NODES:
            raise ConfigError(f"{path}: YAML aliases expand to more than {MAX_YAML_NODES} nodes; refused")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is expanded, counted without expanding:
    each distinct node's size once (aliases share node objects), stopping past MAX_YAML_NODES.
    A node that contains itself (``&a [*a]``) expands without end."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if done:
            open_.discard(key)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_YAML_NODES + 1)
            continue
        if key in sizes:
            continue
        if key in open_:
            return MAX_YAML_NODES + 1  # recursive
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_rules(config_dir: str | Path) -> RuleSet:
    """Load and compile every rule in ``config_dir``; raise ConfigError on the first problem."""
    base = Path(config_dir)
    if not base.is_dir():
        raise ConfigError(f"{base}: no such config directory")
    rules_path, scoring_path = base / RULES_FILE, base / SCORING_FILE
    raw = read_yaml_file(rules_path)
    # A dangling link is an error, not a missing (optional) scoring file.
    present = scoring_path.exists() or scoring_path.is_symlink()
    scoring_raw = read_yaml_file(scoring_path) if present else {}
    return build_ruleset(raw, scoring_raw, str(rules_path), str(scoring_path), str(base))


def load_incidents(config_dir: str | Path) -> IncidentsConfig:
    """The incident configuration of ``config_dir`` (``incidents.yaml``), or the bundled one when the
    directory has none (a rules directory copied before incidents existed). Raises ConfigError naming
    the file, the risk object or rule, and the field."""
    path = Path(config_dir) / INCIDENTS_FILE
    if not (path.exists() or path.is_symlink()):  # a dangling link is an error, not a missing file
        path = bundled_rules_dir() / INCIDENTS_FILE
    return build_incidents_config(read_yaml_file(path), str(path))
