"""The cleaner widget driven in a real browser: JupyterLab 4 and Notebook 7 in headless Chromium (Playwright). Pick a class, mark one image
delete and one relabel, turn the page and back (the marks stay), Apply, check the files on disk, Undo, check they are back."""
import shutil
from pathlib import Path
import nbformat
import pytest
from PIL import Image

pytestmark = pytest.mark.browser
REPORT = Path(__file__).resolve().parents[2]/'runs'/'test-report'

NOTEBOOK = '''
from pathlib import Path
from types import SimpleNamespace
import numpy as np
from lessonlib.cleaner_widget import ImageClassifierCleaner
classes = ['Bag', 'Coat', 'Shirt']
root = Path('data').resolve()
fnames = [root/'valid'/c/f'{c.lower()}{i}.png' for c in classes for i in range(3)]
y = np.repeat(np.arange(3), 3)
# synthetic predictions (no training needed): in every class image 0 is the most surprising, then 1, then 2
probs = np.full((9, 3), 0.1)
probs[np.arange(9), y] = np.tile([0.05, 0.4, 0.9], 3)
probs /= probs.sum(1, keepdims=True)
interp = SimpleNamespace(probs=probs, targets=y, classes=classes, fnames=fnames)
cleaner = ImageClassifierCleaner(interp, max_n=2, choices_file=None)
cleaner
'''


def make_data(root):
    for ci, c in enumerate(['Bag', 'Coat', 'Shirt']):
        (root/'valid'/c).mkdir(parents=True)
        for i in range(3):
            im = Image.new('RGB', (28, 28), (60 * ci, 80 * i, 120))
            for x in range(28): im.putpixel((x, x), (255, 255, 255))
            im.save(root/'valid'/c/f'{c.lower()}{i}.png')


def selected(loc): return loc.evaluate('s => s.options[s.selectedIndex].text')


@pytest.mark.parametrize('ui', ['lab', 'notebook'])
def test_cleaner_widget_in_browser(page, nb_dir, run_all, jupyter, tmp_path, ui):
    from playwright.sync_api import expect
    data = nb_dir/'data'; make_data(data)
    before = {p.relative_to(data).as_posix(): p.read_bytes() for p in data.rglob('*.png')}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK)])
    nb.metadata = {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}}
    nbformat.write(nb, nb_dir/'cleaner.ipynb')
    shot = tmp_path/f'cleaner_browser_{ui}.png'
    try:
        run_all(page, f'{nb_dir.name}/cleaner.ipynb', ui)
        widget = page.locator('.lessonlib-cleaner')
        expect(widget).to_be_visible(timeout=60_000)
        page.locator('.lessonlib-cleaner-class select').select_option(label='Coat')
        items = page.locator('.lessonlib-cleaner-item')
        expect(items.nth(0).locator('.lessonlib-cleaner-fname')).to_have_text('coat0.png', timeout=15_000)
        expect(items.nth(1).locator('.lessonlib-cleaner-fname')).to_have_text('coat1.png')
        expect(page.locator('.lessonlib-cleaner-page')).to_have_text('page 1 of 2 (3 images)')
        items.nth(0).locator('select').select_option(label='<Delete>')
        status = page.locator('.lessonlib-cleaner-status')
        expect(status).to_contain_text('1 marked', timeout=15_000)
        items.nth(1).locator('select').select_option(label='Shirt')
        expect(status).to_contain_text('2 marked (1 delete, 1 relabel)', timeout=15_000)
        # the marks survive turning the page and switching class (they are kept per file, not per page)
        page.locator('.lessonlib-cleaner-next').click()
        expect(items.nth(0).locator('.lessonlib-cleaner-fname')).to_have_text('coat2.png', timeout=15_000)
        page.locator('.lessonlib-cleaner-class select').select_option(label='Bag')
        expect(items.nth(0).locator('.lessonlib-cleaner-fname')).to_have_text('bag0.png', timeout=15_000)
        page.locator('.lessonlib-cleaner-class select').select_option(label='Coat')
        expect(items.nth(0).locator('.lessonlib-cleaner-fname')).to_have_text('coat0.png', timeout=15_000)
        assert selected(items.nth(0).locator('select')) == '<Delete>'
        assert selected(items.nth(1).locator('select')) == 'Shirt'
        page.screenshot(path=str(tmp_path/'cleaner_marked.png'))

        page.locator('.lessonlib-cleaner-apply').click()
        expect(status).to_have_text('Applied: 1 moved to the trash, 1 relabelled', timeout=15_000)
        assert not (data/'valid/Coat/coat0.png').exists() and not (data/'valid/Coat/coat1.png').exists()
        assert (data/'valid/Shirt/coat1.png').read_bytes() == before['valid/Coat/coat1.png']
        trashed = [p for p in (data/'.lessonlib-trash').rglob('coat0.png')]
        assert len(trashed) == 1 and trashed[0].read_bytes() == before['valid/Coat/coat0.png']
        expect(items.nth(0).locator('.lessonlib-cleaner-fname')).to_have_text('coat2.png')   # only coat2 is left in Coat

        page.locator('.lessonlib-cleaner-undo').click()
        expect(status).to_contain_text('Undone: 2 step(s)', timeout=15_000)
        after = {p.relative_to(data).as_posix(): p.read_bytes() for p in data.rglob('*.png') if '.lessonlib-trash' not in p.parts}
        assert after == before
        expect(items.nth(0).locator('.lessonlib-cleaner-fname')).to_have_text('coat0.png')
    finally:
        page.screenshot(path=str(shot), full_page=True)
        try:
            REPORT.mkdir(parents=True, exist_ok=True); shutil.copy(shot, REPORT/shot.name)
        except OSError: pass
