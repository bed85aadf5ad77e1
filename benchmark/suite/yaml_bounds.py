"""YAML with unique keys and a bound on what its aliases expand to, counted before anything is built."""

from __future__ import annotations

from typing import Any

import yaml

from benchmark.core.errors import SuiteError, short


class _UniqueKeys:
    """A mapping with a repeated key is refused: the last one would silently win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{short(key)}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class UniqueKeyLoader(_UniqueKeys, yaml.SafeLoader):
    """The pure-Python loader: its errors point at the exact character, and it records where each alias is used
    (``bounded_yaml`` names the one that multiplies most). Read only for a suite that fails."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.alias_uses: list[tuple[yaml.Mark, str, yaml.Node]] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            self.alias_uses.append((event.start_mark, event.anchor, node))
            return node
        return super().compose_node(parent, index)


try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml
    FastLoader: type = UniqueKeyLoader
else:

    class FastLoader(_UniqueKeys, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """libyaml parses and composes (aliases stay shared nodes): 100,000 seeds load in seconds, where the
        pure-Python loader took 15 s on busy shared cores."""

        def __init__(self, stream: Any) -> None:
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)


# Values a suite's YAML may hold once every alias is expanded: a suite has hundreds, a 10,000-seed list 10,000; an
# alias bomb (nested ``*refs``) billions, which validation and error messages would otherwise walk one by one.
MAX_YAML_VALUES = 200_000


def bounded_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` with unique keys, refusing a document whose aliases expand past ``MAX_YAML_VALUES``.

    The document is composed first (aliases are shared nodes, so composing is linear in the text); its expanded
    size is counted on that graph (each node once); only then is it built into Python objects. A document that
    fails is read again by the pure-Python loader, whose message names the exact place."""
    try:
        loader = FastLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if _expanded_sizes(node)[id(node)] <= MAX_YAML_VALUES:
                return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError:
        pass
    return _load_slowly(text, source)


def _load_slowly(text: str, source: str) -> Any:
    """The pure-Python loader: raises its own error, or the alias limit's with the alias that multiplies most."""
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source, loader.alias_uses)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_sizes(root: yaml.Node) -> dict[int, int]:
    """Values under each node (itself included) with aliases expanded, by node id; iterative, each node once, so a
    9^9 bomb costs its few dozen nodes (Python's integers hold any count)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        kids = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(1 if isinstance(k, yaml.ScalarNode) else sizes[id(k)] for k in kids)
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        for kid in kids:
            if isinstance(kid, yaml.ScalarNode):  # size 1, counted above: most nodes, never pushed
                continue
            if id(kid) in open_nodes:
                raise yaml.constructor.ConstructorError(
                    None, None, "a YAML alias refers to a node that contains it (recursive alias)", kid.start_mark)
            if id(kid) not in sizes:
                stack.append((kid, False))
    return sizes


def _keyed_children(node: yaml.Node) -> list[tuple[Any, yaml.Node]]:
    """(key, value node) of a mapping, (index, item node) of a sequence, nothing for a scalar."""
    if isinstance(node, yaml.MappingNode):
        return list(node.value)
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    return []


def _check_expansion(root: yaml.Node, source: str, uses: list[tuple[yaml.Mark, str, yaml.Node]]) -> None:
    sizes = _expanded_sizes(root)
    if sizes[id(root)] <= MAX_YAML_VALUES:
        return
    # name the alias that multiplies most, where it is used: its line and the key it sits under
    if not uses:
        raise SuiteError(f"{source}: the suite holds more than {MAX_YAML_VALUES:,} values; a suite needs far fewer")
    mark, anchor, node = max(uses, key=lambda u: sizes.get(id(u[2]), 1))  # scalars are not in sizes: 1 each
    where = ".".join(short(str(k), 30) for k in _path_to(root, mark, node)) or "the document"
    raise SuiteError(
        f"{source}: {where} (line {mark.line + 1}, alias *{short(anchor, 30)}): the suite expands to more than "
        f"{MAX_YAML_VALUES:,} values once its YAML aliases are expanded; a suite needs far fewer (nested aliases "
        "multiply)"
    )


def _position(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line, mark.column


def _path_to(root: yaml.Node, use: yaml.Mark, target: yaml.Node) -> list[Any]:
    """The key path (as written) of an alias used at ``use``: down through the nodes whose text spans the use."""
    path: list[Any] = []
    node, at = root, _position(use)
    for _ in range(100):
        step = None
        for key, child in _keyed_children(node):
            key_at = _position(key.start_mark) if isinstance(key, yaml.Node) else None
            if child is target and (key_at is None or key_at <= at):
                step = (key, None)  # the alias itself (the last such key written before the use)
            elif child is not target and _position(child.start_mark) <= at <= _position(child.end_mark):
                step = (key, child)
                break
        if step is None:
            return path
        key, child = step
        path.append(key.value if isinstance(key, yaml.Node) else key)
        if child is None:
            return path
        node = child
    return path