"""Compile-time checks of Bicep templates that `bicep build` would refuse, done here without the Bicep CLI.

The templates are parsed with tree-sitter-bicep (an exact syntax tree: identifiers, member accesses,
calls, loops and conditions are distinct nodes, which pycep's JSON does not keep apart). The rules copy
the Bicep compiler's deploy-time-constant analysis (Azure/bicep src/Bicep.Core/TypeSystem/
DeployTimeConstant*.cs, AzResourceTypeProvider.cs) for the classes we can decide from one file and the
files its modules point at:

- BCP178: the source of any `for` must be computable at the start of the deployment;
- BCP182: when a variable's value is a `for`, its body must be computable at the start too;
- BCP177: the `if` condition of a resource or module;
- BCP120: a resource's `name`, `scope`, `parent` and the write-only deploy-time-constant top-level
  properties (location, kind, sku, identity, tags, zones, ...) of a resource being deployed; a module's
  `name` and `scope`. Names and scopes of `existing` resources are held to the same rule (current Bicep
  inlines such references, older Bicep CLIs refuse them; the stricter rule holds for both);
- BCP091/BCP037/BCP035/BCP053: a module path that does not exist, a module parameter the module does
  not declare, a required parameter not passed, a module output that is not declared;
- BCP057: a name that is declared nowhere in the file.

"Computable at the start" (a deploy-time constant): literals, parameters, loop and lambda variables over
such values, functions of them (except reference(), list*() and the zone functions, which ARM
evaluates at run time), a resource's id, name, type and apiVersion, a module's name, and variables made
only of these. Anything else read from a resource (properties.*, location, tags, ...) or from a module
(outputs.*) is a runtime value, directly or through any chain of variables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

_PARSER = Parser(Language(tree_sitter_bicep.language()))

# Functions ARM evaluates only while deploying (AzNamespaceType.cs: FunctionFlags.RequiresInlining).
_RUNTIME_FUNCTION = re.compile(r"(reference|list[a-zA-Z]*|toLogicalZones?|toPhysicalZones?)")
# Always readable at the start (AzResourceTypeProvider.ReadWriteDeployTimeConstantPropertyNames).
_RESOURCE_CONSTANT_PROPERTIES = frozenset({"id", "name", "type", "apiVersion"})
_MODULE_CONSTANT_PROPERTIES = frozenset({"name"})
# Must be deploy-time constants where written (AzResourceTypeProvider.WriteOnlyDeployTimeConstantPropertyNames,
# plus the name, scope and parent system properties).
_RESOURCE_CONSTANT_INPUTS = frozenset(
    {
        "name",
        "scope",
        "parent",
        "location",
        "kind",
        "subscriptionId",
        "resourceGroup",
        "managedBy",
        "extendedLocation",
        "zones",
        "placement",
        "plan",
        "sku",
        "identity",
        "managedByExtended",
        "tags",
    }
)
_EXISTING_CONSTANT_INPUTS = frozenset({"name", "scope", "parent"})
_MODULE_CONSTANT_INPUTS = frozenset({"name", "scope"})
# Names that are not declared in a file but always resolve.
_NAMESPACES = frozenset({"az", "sys"})
_KEYWORD_VALUES = frozenset({"null", "true", "false"})


@dataclass(frozen=True)
class Problem:
    """One compile error: where, the Bicep diagnostic code it stands for, and why."""

    path: Path
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.code} {self.message}"


@dataclass
class _Declarations:
    params: dict[str, Node] = field(default_factory=dict)
    required_params: set[str] = field(default_factory=set)
    variables: dict[str, Node] = field(default_factory=dict)
    resources: dict[str, Node] = field(default_factory=dict)
    existing: set[str] = field(default_factory=set)
    modules: dict[str, Node] = field(default_factory=dict)
    outputs: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    imports: set[str] = field(default_factory=set)


def _text(node: Node) -> str:
    return (node.text or b"").decode()


def _name(declaration: Node) -> str:
    identifier = next(c for c in declaration.children if c.type == "identifier")
    return _text(identifier)


def _value(declaration: Node) -> Node:
    """The expression after `=` in a declaration."""
    children = declaration.children
    index = max(i for i, c in enumerate(children) if c.type == "=")
    return next(c for c in children[index + 1 :] if c.is_named)


@cache
def _tree(path: Path) -> Node:
    root = _PARSER.parse(path.read_bytes()).root_node
    if root.has_error:
        raise ValueError(f"{path}: syntax error")
    return root


@cache
def _declarations(path: Path) -> _Declarations:
    found = _Declarations()
    for node in _tree(path).named_children:
        if node.type == "parameter_declaration":
            name = _name(node)
            found.params[name] = node
            type_node = next((c for c in node.children if c.type == "type"), None)
            nullable = type_node is not None and any(c.type == "nullable_type" for c in type_node.children)
            if not any(c.type == "=" for c in node.children) and not nullable:
                found.required_params.add(name)
        elif node.type == "variable_declaration":
            found.variables[_name(node)] = _value(node)
        elif node.type == "resource_declaration":
            name = _name(node)
            found.resources[name] = node
            if any(c.type == "existing" for c in node.children):
                found.existing.add(name)
        elif node.type == "module_declaration":
            found.modules[_name(node)] = node
        elif node.type == "output_declaration":
            found.outputs.add(_name(node))
        elif node.type == "user_defined_function":
            found.functions.add(_name(node))
        elif node.type == "import_functionality":
            found.imports.update(_text(c) for c in node.children if c.type == "identifier")
    return found


def _module_path(module: Node) -> str:
    target = next(c for c in module.children if c.type == "string")
    return "".join(_text(c) for c in target.children if c.type == "string_content")


def _unwrap(value: Node) -> tuple[Node | None, Node | None, Node]:
    """(for statement, if statement, body object) of a resource or module value."""
    loop = condition = None
    if value.type == "for_statement":
        loop = value
        value = value.named_children[-1]
    if value.type == "if_statement":
        condition = value
        value = value.named_children[-1]
    return loop, condition, value


def _properties(obj: Node) -> dict[str, Node]:
    """Top-level properties of an object literal: key -> value expression."""
    props: dict[str, Node] = {}
    for prop in obj.named_children:
        if prop.type != "object_property" or len(prop.named_children) < 2:
            continue
        key_node = prop.named_children[0]
        key = _text(key_node).strip("'") if key_node.type in {"identifier", "string"} else _text(key_node)
        props[key] = prop.named_children[-1]
    return props


def _loop_parts(loop: Node) -> tuple[list[str], Node, Node]:
    """(loop variable names, source expression, body) of a for statement."""
    children = loop.children
    in_index = next(i for i, c in enumerate(children) if c.type == "in")
    names: list[str] = []
    for c in children[:in_index]:
        if c.type == "identifier":
            names.append(_text(c))
        elif c.type == "for_loop_parameters":
            names.extend(_text(x) for x in c.named_children)
    source = next(c for c in children[in_index + 1 :] if c.is_named)
    return names, source, loop.named_children[-1]


class _File:
    """The deploy-time-constant analysis of one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.decl = _declarations(path)
        self.problems: list[Problem] = []
        self._var_reasons: dict[str, list[str]] = {}
        self._visiting: set[str] = set()

    # --- runtime reasons -------------------------------------------------------------------------

    def variable_reasons(self, name: str) -> list[str]:
        """Why variable `name` is a runtime value (empty: a deploy-time constant)."""
        if name in self._var_reasons:
            return self._var_reasons[name]
        if name in self._visiting:  # a cycle is its own compile error; do not loop here
            return []
        self._visiting.add(name)
        inner = self.reasons(self.decl.variables[name], {})
        self._visiting.discard(name)
        result = [f"variable {name} -> {reason}" for reason in inner]
        self._var_reasons[name] = result
        return result

    def _symbol_access(self, base: Node, properties: list[str], locals_: dict[str, list[str]]) -> list[str] | None:
        """Reasons for `symbol[...]?.p1.p2...` when the symbol is a resource or module; None otherwise."""
        index_reasons: list[str] = []
        while base.type in {"subscript_expression", "parenthesized_expression"}:
            if base.type == "subscript_expression":
                index_reasons += self.reasons(base.named_children[1], locals_)
            base = base.named_children[0]
        if base.type == "resource_expression":  # parent::child: the child's properties, same rules
            base = base.named_children[0]
        if base.type != "identifier":
            return None
        symbol = _text(base)
        if symbol in locals_:
            return None
        if symbol in self.decl.resources:
            allowed = _RESOURCE_CONSTANT_PROPERTIES
            if symbol in self.decl.existing and self.existing_identity_is_runtime(symbol):
                allowed = frozenset({"type", "apiVersion"})
            kind = "resource"
        elif symbol in self.decl.modules:
            allowed, kind = _MODULE_CONSTANT_PROPERTIES, "module"
        else:
            return None
        if properties and properties[0] in allowed:
            return index_reasons
        what = ".".join([symbol, *properties]) if properties else symbol
        return [*index_reasons, f"reads {what} (runtime state of {kind} {symbol})"]

    def existing_identity_is_runtime(self, symbol: str) -> bool:
        _, _, body = _unwrap(_value(self.decl.resources[symbol]))
        props = _properties(body) if body.type == "object" else {}
        return any(self.reasons(props[key], {}) for key in ("name", "scope") if key in props)

    def reasons(self, node: Node, locals_: dict[str, list[str]], allow_whole_resource: bool = False) -> list[str]:
        """Why an expression is a runtime value (empty: a deploy-time constant)."""
        kind = node.type
        if kind == "identifier":
            name = _text(node)
            if name in locals_:
                return locals_[name]
            if name in self.decl.variables:
                return self.variable_reasons(name)
            if name in self.decl.resources or name in self.decl.modules:
                if allow_whole_resource and not (
                    name in self.decl.existing and self.existing_identity_is_runtime(name)
                ):
                    return []
                return [f"uses the whole of {name} (its runtime state)"]
            return []
        if kind == "member_expression":
            properties: list[str] = []
            base = node
            while base.type == "member_expression":
                properties.insert(0, _text(base.named_children[-1]))
                base = base.named_children[0]
            access = self._symbol_access(base, properties, locals_)
            if access is not None:
                return access
            return self.reasons(base, locals_)
        if kind == "call_expression":
            function = node.named_children[0]
            arguments = node.named_children[-1]
            found: list[str] = []
            if function.type == "identifier":
                fname = _text(function)
            else:  # az.reference(...), resource.listKeys(...)
                fname = _text(function.named_children[-1])
                if function.type == "member_expression":
                    receiver = function.named_children[0]
                    if _text(receiver) not in _NAMESPACES:
                        receiver_reasons = self._symbol_access(receiver, ["id"], locals_)
                        found += receiver_reasons if receiver_reasons is not None else self.reasons(receiver, locals_)
            if _RUNTIME_FUNCTION.fullmatch(fname):
                found.append(f"calls {fname}() (evaluated while deploying)")
            for argument in arguments.named_children:
                found += self.reasons(argument, locals_)
            return found
        if kind == "for_statement":
            names, source, body = _loop_parts(node)
            # A loop variable is as constant as its source, which is reported (BCP178) once, at the source.
            inner: dict[str, list[str]] = {**locals_, **{n: [] for n in names}}
            return self.reasons(source, locals_) + self.reasons(body, inner)
        if kind == "lambda_expression":
            params = [c for c in node.named_children[:-1]]
            inner = dict(locals_)
            for p in params:
                for ident in [p] if p.type == "identifier" else p.named_children:
                    inner[_text(ident)] = []
            return self.reasons(node.named_children[-1], inner)
        if kind == "object_property":
            children = node.named_children
            value_reasons = self.reasons(children[-1], locals_) if len(children) > 1 else []
            key = children[0]
            key_reasons = self.reasons(key, locals_) if key.type == "string" else []
            return key_reasons + value_reasons
        if kind in {"property_identifier", "comment", "decorators", "decorator", "type"}:
            return []
        found = []
        for child in node.named_children:
            found += self.reasons(child, locals_)
        return found

    # --- checks -----------------------------------------------------------------------------------

    def flag(self, node: Node, code: str, message: str) -> None:
        self.problems.append(Problem(self.path, node.start_point[0] + 1, code, message))

    def check(self) -> list[Problem]:
        self.check_loops(_tree(self.path), {})
        for name, value in self.decl.variables.items():
            if value.type == "for_statement":
                names, _, body = _loop_parts(value)
                for reason in self.reasons(body, {n: [] for n in names}):
                    self.flag(body, "BCP182", f"the for-body of variable {name} {reason}")
        for node in _walk(_tree(self.path)):
            if node.type == "resource_declaration":
                self.check_declaration(node, "resource")
            elif node.type == "module_declaration":
                self.check_declaration(node, "module")
                self.check_module(node)
        self.check_undeclared(_tree(self.path))
        return self.problems

    def check_loops(self, node: Node, locals_: dict[str, list[str]]) -> None:
        if node.type == "for_statement":
            names, source, body = _loop_parts(node)
            for reason in self.reasons(source, locals_):
                self.flag(source, "BCP178", f"the for-expression {reason}")
            self.check_loops(body, {**locals_, **{n: [] for n in names}})
            return
        for child in node.named_children:
            self.check_loops(child, locals_)

    def check_declaration(self, node: Node, kind: str) -> None:
        name = _name(node)
        loop, condition, body = _unwrap(_value(node))
        locals_: dict[str, list[str]] = {}
        if loop is not None:
            names, _, _ = _loop_parts(loop)
            locals_ = {n: [] for n in names}
        if condition is not None:
            for reason in self.reasons(condition.named_children[0], locals_):
                self.flag(condition, "BCP177", f"the if-condition of {kind} {name} {reason}")
        if body.type != "object":
            return
        existing = any(c.type == "existing" for c in node.children)
        if kind == "module":
            inputs = _MODULE_CONSTANT_INPUTS
        else:
            inputs = _EXISTING_CONSTANT_INPUTS if existing else _RESOURCE_CONSTANT_INPUTS
        for key, value in _properties(body).items():
            if key not in inputs:
                continue
            whole_ok = key in {"scope", "parent"}
            for reason in self.reasons(value, locals_, allow_whole_resource=whole_ok):
                what = f"existing resource {name}" if existing else f"{kind} {name}"
                self.flag(value, "BCP120", f"{key} of {what} {reason}")

    def check_module(self, node: Node) -> None:
        name = _name(node)
        relative = _module_path(node)
        if re.match(r"^(br|ts)[:/]", relative):
            return  # a registry module: the workflow's `bicep build` checks it
        target = (self.path.parent / relative).resolve()
        if not target.is_file():
            self.flag(node, "BCP091", f"module {name}: {relative} does not exist")
            return
        declared = _declarations(target)
        _, _, body = _unwrap(_value(node))
        params_node = _properties(body).get("params") if body.type == "object" else None
        given = set(_properties(params_node)) if params_node is not None and params_node.type == "object" else set()
        for unknown in sorted(given - set(declared.params)):
            self.flag(node, "BCP037", f"module {name}: {relative} declares no parameter {unknown}")
        if params_node is None or params_node.type == "object":
            for missing in sorted(declared.required_params - given):
                self.flag(node, "BCP035", f"module {name}: required parameter {missing} of {relative} not given")

    def check_undeclared(self, root: Node) -> None:
        known = (
            set(self.decl.params)
            | set(self.decl.variables)
            | set(self.decl.resources)
            | set(self.decl.modules)
            | self.decl.functions
            | self.decl.imports
            | _NAMESPACES
            | _KEYWORD_VALUES
        )
        declared_here = {
            "parameter_declaration",
            "variable_declaration",
            "resource_declaration",
            "module_declaration",
            "output_declaration",
        }
        for node in root.named_children:
            if node.type not in declared_here or not any(c.type == "=" for c in node.children):
                continue
            self._undeclared(_value(node), known)
        # module outputs that do not exist
        for access in _walk(root):
            if access.type != "member_expression":
                continue
            chain: list[Node] = []
            base = access
            while base.type == "member_expression":
                chain.insert(0, base.named_children[-1])
                base = base.named_children[0]
            while base.type == "subscript_expression":
                base = base.named_children[0]
            if base.type != "identifier" or _text(base) not in self.decl.modules or access.parent is None:
                continue
            if access.parent.type == "member_expression" and access.parent.named_children[0] == access:
                continue  # only the outermost access of a chain
            if len(chain) >= 2 and _text(chain[0]) == "outputs":
                module = self.decl.modules[_text(base)]
                target = (self.path.parent / _module_path(module)).resolve()
                output = _text(chain[1])
                if target.is_file() and output not in _declarations(target).outputs:
                    self.flag(access, "BCP053", f"module {_text(base)} has no output {output}")

    def _undeclared(self, node: Node, known: set[str]) -> None:
        if node.type == "identifier":
            if _text(node) not in known:
                self.flag(node, "BCP057", f"the name {_text(node)} does not exist in this file")
            return
        if node.type == "call_expression":
            function, arguments = node.named_children[0], node.named_children[-1]
            if function.type == "member_expression":
                self._undeclared(function.named_children[0], known)
            for argument in arguments.named_children:
                self._undeclared(argument, known)
            return
        if node.type == "member_expression":
            self._undeclared(node.named_children[0], known)
            return
        if node.type == "resource_expression":
            self._undeclared(node.named_children[0], known)
            return
        if node.type == "for_statement":
            names, source, body = _loop_parts(node)
            self._undeclared(source, known)
            self._undeclared(body, known | set(names))
            return
        if node.type == "lambda_expression":
            params = {
                _text(i)
                for p in node.named_children[:-1]
                for i in ([p] if p.type == "identifier" else p.named_children)
            }
            self._undeclared(node.named_children[-1], known | params)
            return
        if node.type == "object_property":
            children = node.named_children
            if children and children[0].type == "string":
                self._undeclared(children[0], known)
            if children and children[-1].type == "resource_declaration":
                return
            if len(children) > 1:
                self._undeclared(children[-1], known)
            return
        if node.type in {"property_identifier", "type", "decorators", "comment", "resource_declaration"}:
            return
        for child in node.named_children:
            self._undeclared(child, known)


def _walk(node: Node) -> list[Node]:
    found = [node]
    for child in node.named_children:
        found += _walk(child)
    return found


def check(path: Path) -> list[Problem]:
    """Every compile-time problem this module can find in one Bicep file (and the module files it calls)."""
    return _File(path.resolve()).check()
