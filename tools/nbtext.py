#!/usr/bin/env python
"""Round-trip notebooks through a plain-text "percent" form for editing in a terminal.

    python tools/nbtext.py to-py nbs/01_data.db.ipynb /tmp/01.py   # notebook -> text
    python tools/nbtext.py to-nb /tmp/01.py nbs/01_data.db.ipynb   # text -> notebook (outputs dropped)

Cells start with `# %%` (code) or `# %% [markdown]`; markdown lines carry a `# ` prefix;
`# %% tags=["parameters"]` keeps papermill's tag. The notebook stays the source of truth:
the text form is a scratch copy, never committed.
"""
import json, re, sys
from pathlib import Path
import nbformat

_header = re.compile(r'^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$')

def py_to_cells(text):
    cells, kind, tags, lines = [], None, None, []
    def flush():
        if kind is None: return
        body = '\n'.join(lines).strip('\n')
        if kind == 'markdown':
            body = '\n'.join(l[2:] if l.startswith('# ') else l.lstrip('#') for l in body.split('\n'))
            cell = nbformat.v4.new_markdown_cell(body)
        else: cell = nbformat.v4.new_code_cell(body)
        if tags: cell.metadata['tags'] = tags
        cells.append(cell)
    for line in text.split('\n'):
        m = _header.match(line)
        if m:
            flush()
            kind = 'markdown' if m['md'] else 'code'
            tags = json.loads(m['tags']) if m['tags'] else None
            lines = []
        elif kind is not None: lines.append(line)
    flush()
    return cells

def to_nb(src, dest):
    nb = nbformat.v4.new_notebook()
    nb.cells = py_to_cells(Path(src).read_text())
    nb.metadata = {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}}
    for c in nb.cells: c.pop('id', None)
    nb.nbformat_minor = 4
    Path(dest).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

def to_py(src, dest):
    nb = json.loads(Path(src).read_text())
    out = []
    for c in nb['cells']:
        src_text = ''.join(c['source'])
        tags = c.get('metadata', {}).get('tags')
        head = ('# %%' + (' [markdown]' if c['cell_type'] == 'markdown' else '')
                + (f' tags={json.dumps(tags)}' if tags else ''))
        if c['cell_type'] == 'markdown': src_text = '\n'.join(('# ' + l) if l else '#' for l in src_text.split('\n'))
        out.append(head + '\n' + src_text + '\n')
    Path(dest).write_text('\n'.join(out))

if __name__ == '__main__':
    cmd, src, dest = sys.argv[1:4]
    {'to-nb': to_nb, 'to-py': to_py}[cmd](src, dest)
