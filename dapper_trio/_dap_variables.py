"""DAP variables: values shown as trees, with references that live for one stop.

A DAP client asks for the children of a value by a number it was given
(``variablesReference``).  Those numbers mean something only while the
program stays stopped: ``VariableTable`` hands them out and forgets them all
when the program resumes (``clear``).  A value is *expandable* when it is a
non-empty container or an object with attributes; its children are its items
(paged with ``start``/``count`` for sequences and mappings) or its attributes.
Each child carries an ``evaluateName``, an expression that evaluates to it in
the frame the tree started from, when one can be written down.

``setVariable`` changes a child: a node may have an *assigner* (list items,
dict values, attributes, a frame's locals or globals; not tuples, sets or
the Trio scope) and an *evaluator*, which computes the new value from the
client's expression in that same frame.  A node's children inherit its
evaluator.

This module touches only Python values, never trio or the debugger, so it
runs in whichever thread the program is stopped on.
"""

from __future__ import annotations

import dataclasses
import reprlib
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: Longest ``value`` text sent for one variable.
MAX_VALUE_LENGTH = 1000

_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray)
_NOT_EXPANDED = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    type,
)


def safe_repr(value: object) -> str:
    """``repr(value)``, truncated; a repr that raises is described instead."""
    try:
        text = repr(value)
    except Exception as exc:
        return f"<repr of {type(value).__name__} failed: {type(exc).__name__}: {exc}>"
    if len(text) > MAX_VALUE_LENGTH:
        return text[: MAX_VALUE_LENGTH - 3] + "..."
    return text


def _attributes(value: object) -> dict[str, Any] | None:
    if isinstance(value, (*_NOT_EXPANDED, *_SCALARS)):
        return None
    try:
        attributes = vars(value)
    except TypeError:
        return None
    return dict(attributes) if attributes else None


def _key_expression(key: object) -> str | None:
    """*key* written as an expression, if its repr evaluates back to it."""
    if isinstance(key, (str, int, float, bool, bytes, type(None))):
        return (
            reprlib.repr(key) if isinstance(key, str) and len(key) > 200 else repr(key)
        )
    return None


@dataclasses.dataclass(frozen=True)
class Child:
    """One child of an expandable value: its name and how to reach it."""

    name: str
    value: Any
    evaluate_name: str | None


#: A node's children, computed when asked: (start, count) -> children.
Producer = Callable[[int, int | None], list[Child]]
#: Sets a node's child: (the child's name, the new value) -> None.
Assigner = Callable[[str, Any], None]
#: Evaluates an expression in the frame a tree of values started from.
Evaluator = Callable[[str], Any]


class NotAssignable(Exception):
    """A ``setVariable`` on a value that cannot be changed in place."""


@dataclasses.dataclass(frozen=True)
class _Node:
    produce: Producer
    assign: Assigner | None
    evaluate: Evaluator | None


class VariableTable:
    """Hands out ``variablesReference`` numbers for one stop of the program.

    ``add_scope`` registers a named dict of variables (a frame's locals), and
    ``describe`` a single value, giving it a reference if it is expandable.
    ``children`` answers a ``variables`` request.  References start at 1 (0
    means "not expandable" in DAP) and grow for the whole session, so a
    stale reference from an earlier stop is refused rather than misread.
    """

    def __init__(self) -> None:
        self._next = 1
        self._nodes: dict[int, _Node] = {}

    def clear(self) -> None:
        """Forget every reference (the program resumed)."""
        self._nodes.clear()

    def add(
        self,
        producer: Producer,
        *,
        assign: Assigner | None = None,
        evaluate: Evaluator | None = None,
    ) -> int:
        """Register a node whose children *producer* makes; return its reference.

        *assign* sets one of its children (``setVariable``); *evaluate*
        computes values for it and for its descendants' assignments.
        """
        reference = self._next
        self._next += 1
        self._nodes[reference] = _Node(producer, assign, evaluate)
        return reference

    def add_mapping(
        self,
        mapping: Mapping[str, Any],
        *,
        prefix: str | None = "",
        assign: Assigner | None = None,
        evaluate: Evaluator | None = None,
    ) -> int:
        """Register a scope: *mapping*'s items are named variables.

        A child's ``evaluateName`` is its name (*prefix* ``""``: locals and
        globals), or none at all (*prefix* None).
        """
        items = sorted(mapping.items(), key=lambda item: str(item[0]))

        def produce(start: int, count: int | None) -> list[Child]:
            chosen = items[start:] if count is None else items[start : start + count]
            return [
                Child(str(name), value, None if prefix is None else f"{prefix}{name}")
                for name, value in chosen
            ]

        return self.add(produce, assign=assign, evaluate=evaluate)

    def _node(self, reference: int) -> _Node:
        try:
            return self._nodes[reference]
        except KeyError:
            raise LookupError(
                f"variablesReference {reference} is not valid now (the program "
                "has resumed since it was given, or it was never given)"
            ) from None

    def children(
        self, reference: int, start: int = 0, count: int | None = None
    ) -> list[Child]:
        """The children of node *reference*, ``count`` of them from ``start``.

        Raises ``LookupError`` for a reference this stop did not hand out.
        """
        return self._node(reference).produce(start, count)

    def assign(self, reference: int, name: str, expression: str) -> dict[str, Any]:
        """Set child *name* of node *reference* to the value of *expression*.

        Returns the child's new DAP ``Variable``.  Raises ``LookupError`` for
        an unknown reference or child, ``NotAssignable`` if the node cannot be
        changed, and whatever evaluating *expression* raises.
        """
        node = self._node(reference)
        children = {child.name: child for child in node.produce(0, None)}
        child = children.get(name)
        if child is None:
            raise LookupError(f"no variable {name!r} in variablesReference {reference}")
        if node.assign is None or node.evaluate is None:
            raise NotAssignable(f"{name!r} cannot be set: its container is read-only")
        value = node.evaluate(expression)
        node.assign(child.name, value)
        return self.describe(name, value, child.evaluate_name, evaluate=node.evaluate)

    def describe(
        self,
        name: str,
        value: object,
        evaluate_name: str | None,
        *,
        evaluate: Evaluator | None = None,
    ) -> dict[str, Any]:
        """A DAP ``Variable`` for *value*; expandable values get a reference.

        *evaluate* is the evaluator of the frame *value* was read in: its
        children can then be set.
        """
        variable: dict[str, Any] = {
            "name": name,
            "value": safe_repr(value),
            "type": type(value).__name__,
            "variablesReference": 0,
        }
        if evaluate_name is not None:
            variable["evaluateName"] = evaluate_name
        reference, indexed, named = self._expand(value, evaluate_name, evaluate)
        variable["variablesReference"] = reference
        if indexed is not None:
            variable["indexedVariables"] = indexed
        if named is not None:
            variable["namedVariables"] = named
        return variable

    def _expand(
        self, value: object, path: str | None, evaluate: Evaluator | None
    ) -> tuple[int, int | None, int | None]:
        """(reference, indexedVariables, namedVariables) for *value*."""
        if isinstance(value, (list, tuple)) and value:
            sequence = list(value)

            def produce_items(start: int, count: int | None) -> list[Child]:
                stop = len(sequence) if count is None else start + count
                return [
                    Child(str(index), sequence[index], _item(path, repr(index)))
                    for index in range(start, min(stop, len(sequence)))
                ]

            assign_item: Assigner | None = None
            if isinstance(value, list):
                target = value

                def assign_item(name: str, new: Any) -> None:
                    target[int(name)] = new
                    sequence[int(name)] = new

            reference = self.add(produce_items, assign=assign_item, evaluate=evaluate)
            return reference, len(sequence), None
        if isinstance(value, dict) and value:
            entries = list(value.items())
            mapping = value

            def produce_entries(start: int, count: int | None) -> list[Child]:
                chosen = (
                    entries[start:] if count is None else entries[start : start + count]
                )
                return [
                    Child(safe_repr(key), item, _item(path, _key_expression(key)))
                    for key, item in chosen
                ]

            def assign_entry(name: str, new: Any) -> None:
                for index, (key, _) in enumerate(entries):
                    if safe_repr(key) == name:
                        mapping[key] = new
                        entries[index] = (key, new)
                        return

            reference = self.add(
                produce_entries, assign=assign_entry, evaluate=evaluate
            )
            return reference, None, len(entries)
        if isinstance(value, (set, frozenset)) and value:
            members = sorted(value, key=safe_repr)

            def produce_members(start: int, count: int | None) -> list[Child]:
                chosen = (
                    members[start:] if count is None else members[start : start + count]
                )
                return [Child(safe_repr(member), member, None) for member in chosen]

            return self.add(produce_members, evaluate=evaluate), len(members), None
        attributes = _attributes(value)
        if attributes is not None:
            names = sorted(attributes)
            owner = value

            def produce_attributes(start: int, count: int | None) -> list[Child]:
                chosen = (
                    names[start:] if count is None else names[start : start + count]
                )
                return [
                    Child(
                        name,
                        attributes[name],
                        f"{path}.{name}"
                        if path is not None and name.isidentifier()
                        else None,
                    )
                    for name in chosen
                ]

            def assign_attribute(name: str, new: Any) -> None:
                setattr(owner, name, new)
                attributes[name] = new

            reference = self.add(
                produce_attributes, assign=assign_attribute, evaluate=evaluate
            )
            return reference, None, len(names)
        return 0, None, None

    def variables(
        self, reference: int, start: int = 0, count: int | None = None
    ) -> list[dict[str, Any]]:
        """The DAP ``Variable`` list of node *reference* (a ``variables`` request)."""
        evaluate = self._node(reference).evaluate
        return [
            self.describe(
                child.name, child.value, child.evaluate_name, evaluate=evaluate
            )
            for child in self.children(reference, start, count)
        ]


def _item(path: str | None, key: str | None) -> str | None:
    if path is None or key is None:
        return None
    return f"{path}[{key}]"


def plain_children(pairs: Iterable[tuple[str, object]]) -> Producer:
    """A producer for fixed (name, value) pairs without evaluate names."""
    items = list(pairs)

    def produce(start: int, count: int | None) -> list[Child]:
        chosen = items[start:] if count is None else items[start : start + count]
        return [Child(name, value, None) for name, value in chosen]

    return produce
