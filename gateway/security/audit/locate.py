"""Where a key is in the upstreams file: a dotted path (``upstreams.payments.tls.min_version``) and
its line, found by walking the composed YAML nodes (which keep their ``start_mark``)."""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from gateway.security.audit.findings import Location

KeyPath = Sequence[str | int]


def dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


class YamlLocator:
    """Lines of keys in one YAML document; a path that stops early gives its deepest existing node."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        try:
            self._root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:  # the loader reports bad YAML; here it only means "no line numbers"
            self._root = None

    def at(self, *path: str | int) -> Location:
        return Location(file=self.file, key=dotted(path), line=self.line(path))

    def line(self, path: KeyPath) -> int | None:
        node, line = self._root, None
        for part in path:
            found = _child(node, part)
            if found is None:
                break
            key_node, node = found
            line = key_node.start_mark.line + 1
        return line

    def __repr__(self) -> str:
        return f"<YamlLocator {self.file}>"


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item: yaml.Node = node.value[part]
        return item, item
    return None
