"""Load YAML while remembering the line of every key and list item.

Validation errors name a line, so the loader keeps a map from each value's
path (``("rules", 0, "verdict")``) to the 1-based line it starts on.

Policy text comes from administrators but also over the network (a push to the
server), so whatever it holds must end as a YamlSyntaxError, never as another
exception: the loader refuses what PyYAML would accept but we cannot use —
keys that are lists or mappings, a key given twice (the second would silently
replace the first), nesting without end (an alias inside itself) or aliases
that multiply into millions of values.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

Path = tuple[str | int, ...]

# Far beyond any real policy; bounds the work (and the recursion) a hostile file causes.
MAX_DEPTH = 64
MAX_NODES = 200_000
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_SYNTAX_HINT = "fix the indentation or quoting on that line"


class YamlSyntaxError(ValueError):
    def __init__(self, message: str, line: int | None, hint: str = _SYNTAX_HINT) -> None:
        super().__init__(message)
        self.line = line
        self.hint = hint


def _text(value: str) -> str:
    """Join surrogate pairs; refuse an unpaired half, which is not text at all.

    A JSON-style escape of a character beyond the BMP ("\\ud83d\\ude00", what
    Python's json.dumps writes for an emoji) reaches us as two halves.
    """
    if not any("\ud800" <= char <= "\udfff" for char in value):
        return value
    return value.encode("utf-16", "surrogatepass").decode("utf-16")


class _PolicyLoader(yaml.SafeLoader):
    """SafeLoader that keeps dates as text and checks every string.

    `expires: 2024-13-45` then reaches the model, which reports it as a bad
    date on its field and line; PyYAML's own date constructor would raise a
    bare ValueError instead.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_yaml_str(self, node: yaml.ScalarNode) -> str:
        value = self.construct_scalar(node)
        try:
            return _text(value)
        except UnicodeError:
            raise yaml.constructor.ConstructorError(
                None, None, "an unpaired surrogate escape (\\ud800-\\udfff) is not text",
                node.start_mark) from None


_PolicyLoader.add_constructor("tag:yaml.org,2002:str", _PolicyLoader.construct_yaml_str)

_CSafeLoader: Any = getattr(yaml, "CSafeLoader", None)
if _CSafeLoader is not None:
    class _FastPolicyLoader(_CSafeLoader):  # type: ignore[misc]
        """The same loader on libyaml's parser (in C, in PyYAML's wheels): a catalog
        file parses several times faster."""

        yaml_implicit_resolvers = _PolicyLoader.yaml_implicit_resolvers
        construct_yaml_str = _PolicyLoader.construct_yaml_str

    _FastPolicyLoader.add_constructor("tag:yaml.org,2002:str",
                                      _FastPolicyLoader.construct_yaml_str)
# libyaml refuses a surrogate escape ("\ud83d\udcac", as json.dumps writes an emoji),
# which the pure-Python parser reads and _text joins: such text takes the slow path.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _loader_for(text: str) -> Any:
    """A loader for `text` (libyaml's or PyYAML's own parser: the same API)."""
    if _CSafeLoader is None or _SURROGATE_ESCAPE.search(text):
        return _PolicyLoader(text)
    return _FastPolicyLoader(text)


def load_with_lines(text: str) -> tuple[Any, dict[Path, int]]:
    # Parsed once: the node tree gives the lines, and the same tree is constructed.
    loader = _loader_for(text)
    try:
        return _load(loader)
    finally:
        loader.dispose()


def _load(loader: Any) -> tuple[Any, dict[Path, int]]:
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"YAML syntax error: {_problem(exc)}", _line(exc)) from exc
    except RecursionError as exc:
        raise _too_deep(None) from exc
    lines: dict[Path, int] = {}
    if node is None:
        return None, lines
    _Indexer(lines).index(node, ())
    try:
        data = loader.construct_document(node)
    except RecursionError as exc:
        raise _too_deep(None) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"YAML error: {_problem(exc)}", _line(exc)) from exc
    except (ValueError, TypeError, OverflowError) as exc:
        # An explicit tag on a value it cannot convert (`!!int x`, `!!timestamp 2024-13-45`).
        raise YamlSyntaxError(f"YAML value cannot be read: {exc}", None,
                              "remove the explicit `!!` tag or fix the value it marks") from exc
    return data, lines


def _problem(exc: yaml.YAMLError) -> str:
    return str(getattr(exc, "problem", None) or exc)


def _line(exc: yaml.YAMLError) -> int | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.line + 1 if mark is not None else None


def _too_deep(line: int | None) -> YamlSyntaxError:
    return YamlSyntaxError(f"values are nested more than {MAX_DEPTH} levels deep", line,
                           "flatten the structure; an alias (*name) must not sit inside "
                           "its own anchor (&name)")


class _Indexer:
    def __init__(self, lines: dict[Path, int]) -> None:
        self.lines = lines
        self.nodes = 0

    def index(self, node: yaml.Node, path: Path) -> None:
        line = node.start_mark.line + 1
        if len(path) > MAX_DEPTH:
            raise _too_deep(line)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise YamlSyntaxError(
                f"the document expands to more than {MAX_NODES} values", line,
                "write the values out instead of repeating aliases (*name)")
        self.lines.setdefault(path, line)
        if isinstance(node, yaml.MappingNode):
            self._mapping(node, path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.index(item, (*path, index))

    def _mapping(self, node: yaml.MappingNode, path: Path) -> None:
        seen: set[str] = set()
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlSyntaxError("a key must be a plain word, not a list or a mapping",
                                      line, "write the key as text before the colon")
            try:
                key = _text(key_node.value)
            except UnicodeError:
                raise YamlSyntaxError("an unpaired surrogate escape (\\ud800-\\udfff) is not "
                                      "text", line, "remove the escape") from None
            if key in seen and key != "<<":
                raise YamlSyntaxError(f"key {key!r} appears twice in the same mapping", line,
                                      "keep one: the second would silently replace the first")
            seen.add(key)
            self.lines[(*path, key)] = line
            self.index(value_node, (*path, key))


def line_for(lines: dict[Path, int], path: Path) -> int | None:
    """The line of the deepest known prefix of `path`."""
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None
