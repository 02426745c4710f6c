"""Layers look down only: every quantnb module imports from its own layer or lower ones, never another module's
private names, and no two modules import each other. Read from the source (ast), lazy imports included."""
import ast
from pathlib import Path

import pytest

import quantnb

PACKAGE = Path(quantnb.__file__).parent

# The order a reader meets the package in; a module may import from its own layer and the layers before it.
LAYERS = ['core', 'data', 'models', 'pretrain transfer', 'train', 'predict strategy prune', 'experiments', 'cli']
LAYER_OF = {top: rank for rank, names in enumerate(LAYERS) for top in names.split()}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def layer(module: str) -> int:
    "Layer of `quantnb.x.y` (by `x`); a module missing from the map is a test failure, not a free pass."
    top = module.split('.')[1] if module.count('.') else ''
    assert top in LAYER_OF, f'{module}: add its layer to LAYERS in tests/test_layers.py'
    return LAYER_OF[top]


def quantnb_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    "(line, imported quantnb module, names) for every import of a quantnb module in `path`, lazy ones too."
    me, found = module_name(path), []
    package = me if path.name == '__init__.py' else me.rpartition('.')[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split('.')[0] == 'quantnb']
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else: target = node.module or ''
            if target.split('.')[0] != 'quantnb': continue
            names = [a.name for a in node.names]
            if not node.module:   # `from . import importer`: the names are modules
                found += [(node.lineno, f'{target}.{n}', []) for n in names]
            else: found.append((node.lineno, target, names))
    return found


MODULES = sorted(p for p in PACKAGE.rglob('*.py') if p.name != '_modidx.py')


def test_the_map_covers_every_module():
    assert len(MODULES) > 20
    for p in MODULES:
        if module_name(p) != 'quantnb': layer(module_name(p))


@pytest.mark.parametrize('path', MODULES, ids=lambda p: module_name(p))
def test_no_private_names_from_another_module(path):
    me = module_name(path)
    private = [f'{path.name}:{line}: {name} from {target}' for line, target, names in quantnb_imports(path)
               for name in names if target != me and name.startswith('_') and not name.startswith('__')]
    assert not private, 'give the owner a public name instead:\n' + '\n'.join(private)


@pytest.mark.parametrize('path', [p for p in MODULES if module_name(p) != 'quantnb'], ids=lambda p: module_name(p))
def test_imports_look_down_only(path):
    me = module_name(path)
    upward = [f'{path.name}:{line}: {me} (layer {LAYERS[layer(me)]!r}) imports {target} '
              f'(layer {LAYERS[layer(target)]!r})'
              for line, target, _ in quantnb_imports(path) if target != 'quantnb' and layer(target) > layer(me)]
    assert not upward, '\n'.join(upward)


def test_no_two_modules_import_each_other():
    "Within a layer too (data.db and data.importer): the import graph, lazy imports included, has no cycle."
    graph = {module_name(p): {t for _, t, _ in quantnb_imports(p)} - {module_name(p)} for p in MODULES}
    graph = {m: {t for t in ts if t in graph} for m, ts in graph.items()}   # names of classes, not modules, drop

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start: return path + [start]
                if nxt not in seen: seen.add(nxt); stack.append((nxt, path + [nxt]))
    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, ' -> '.join(cycles[0])


@pytest.mark.parametrize('path', MODULES, ids=lambda p: module_name(p))
def test_methods_are_attached_only_to_the_modules_own_classes(path):
    "`@patch_to(C)` extends a class defined in the same module; a lower layer's class gets a public method there."
    tree = ast.parse(path.read_text())
    own = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    foreign = [f'{path.name}:{d.lineno}: @patch_to({d.args[0].id}) def {n.name}' for n in tree.body
               if isinstance(n, ast.FunctionDef) for d in n.decorator_list
               if isinstance(d, ast.Call) and getattr(d.func, 'id', '') == 'patch_to'
               and isinstance(d.args[0], ast.Name) and d.args[0].id not in own]
    assert not foreign, '\n'.join(foreign)
