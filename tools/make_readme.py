"""Write README.md from nbs/index.ipynb without Quarto (nbdev_readme needs Quarto, which is not installable offline).

Usage (project root, inside the venv): python tools/make_readme.py [--check]
--check: exit 1 when README.md differs from what index.ipynb gives, without writing it.
"""
import json, sys
import yaml
from nbdev.config import get_config
from nbdev.serve import proc_nbs

def render(cfg):
    "Markdown for README.md from the processed index notebook."
    nb = json.loads((proc_nbs(cfg.nbs_path)/cfg.readme_nb).read_text())
    out = []
    for c in nb['cells']:
        s = ''.join(c['source'])
        if c['cell_type'] == 'raw':  # front matter made from the '# title' + '> description' cell
            m = yaml.safe_load(s.strip().strip('-')) or {}
            out.append(f"# {m.get('title', cfg.lib_name)}" + (f"\n\n> {m['description']}" if 'description' in m else ''))
        elif c['cell_type'] == 'markdown': out.append(s)
        elif c['cell_type'] == 'code':
            out.append(f'``` python\n{s}\n```')
            for o in c.get('outputs', []):
                t = o.get('text') or o.get('data', {}).get('text/plain')
                if t: out.append('    ' + ''.join(t).rstrip().replace('\n', '\n    '))
    return '\n\n'.join(out) + '\n'

if __name__ == '__main__':  # guard needed: proc_nbs spawns worker processes
    cfg = get_config()
    text, readme = render(cfg), cfg.config_path/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python tools/make_readme.py` and commit it.')
        print('README.md is up to date with nbs/index.ipynb')
    else:
        readme.write_text(text); print(f'wrote {readme}')
