#!/usr/bin/env python
"""Execute notebooks in place so their committed outputs match the code, then clean them.

    python tools/run_nbs.py nbs/01_data.db.ipynb nbs/02_data.importer.ipynb
    python tools/run_nbs.py            # every notebook under nbs/ except train notebooks

Cells marked `#| eval: false` are skipped, as `nbdev_test` skips them. Stops at the first error.
"""
import os, subprocess, sys
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

def _skip(cell):
    if cell.cell_type != 'code': return True
    src = cell.source
    return '#| eval: false' in src or '#|eval: false' in src

def run(path: Path):
    os.environ.setdefault('MPLBACKEND', 'agg')
    nb = read_nb(path)
    shell = CaptureShell(path, mpl_format='png')
    for cell in nb.cells:
        if cell.cell_type == 'code': cell.outputs, cell.execution_count = [], None
    shell.run_all(nb, exc_stop=True, preproc=_skip)
    write_nb(nb, path)

if __name__ == '__main__':
    root = Path(__file__).resolve().parent.parent
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted(p for p in (root/'nbs').glob('[0-9]*.ipynb'))
    for p in paths:
        print('running', p.relative_to(root), flush=True)
        cwd = os.getcwd(); os.chdir(p.parent)
        try: run(p)
        finally: os.chdir(cwd)
    subprocess.run(['nbdev_clean'], cwd=root, check=True)
