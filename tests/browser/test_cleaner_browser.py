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


MULTI_NOTEBOOK = '''
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import lessonlib.csvdata
from lessonlib.data import ImageData
from lessonlib.cleaner_widget import ImageClassifierCleaner
data = ImageData.from_csv(Path('data').resolve(), 'train', 'labels.csv', val_idxs=[0, 1, 2, 3], suffix='.png')
y = data.val_ds.y
# synthetic sigmoid outputs: image 0 is predicted wrong on every tag, so it has the largest loss
p = np.clip(y * 0.7 + 0.2, 0, 1); p[0] = 1 - y[0] * 0.9 - 0.05
interp = SimpleNamespace(probs=p, targets=y, classes=data.classes, fnames=data.val_ds.fnames, is_multi=True)
cleaner = ImageClassifierCleaner(interp, data=data, max_n=4, choices_file=None)
cleaner
'''
PLANET = ['clear road', 'cloudy', 'water clear', 'road water clear', 'cloudy water', 'clear', 'road cloudy']


def make_planet(root):
    (root/'train').mkdir(parents=True)
    for i in range(len(PLANET)): Image.new('RGB', (28, 28), (30 * i, 120, 200 - 20 * i)).save(root/'train'/f'{i}.png')
    (root/'labels.csv').write_text('image_name,tags\n' + ''.join(f'{i},{t}\n' for i, t in enumerate(PLANET)))


def test_cleaner_edits_a_tag_set_in_jupyterlab(page, nb_dir, run_all, tmp_path):
    "Multi-label data: on the worst image remove a tag (×), add one from the menu and type one, Apply (CSV on disk), Undo (bytes back)."
    from playwright.sync_api import expect
    data = nb_dir/'data'; make_planet(data)
    csv0 = (data/'labels.csv').read_bytes()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(MULTI_NOTEBOOK)])
    nb.metadata = {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}}
    nbformat.write(nb, nb_dir/'tags.ipynb')
    shot = tmp_path/'cleaner_tags_browser_lab.png'
    try:
        run_all(page, f'{nb_dir.name}/tags.ipynb', 'lab')
        expect(page.locator('.lessonlib-cleaner')).to_be_visible(timeout=60_000)
        items = page.locator('.lessonlib-cleaner-item')
        first = items.nth(0)
        expect(first.locator('.lessonlib-cleaner-fname')).to_have_text('0.png', timeout=15_000)   # the worst image first
        expect(first.locator('.lessonlib-cleaner-pred')).to_have_text('pred: cloudy water')
        tags = first.locator('.lessonlib-cleaner-tags')
        expect(tags.locator('.jupyter-widget-tag:not(.jupyter-widget-taginput)')).to_have_text(['clear', 'road'])
        status = page.locator('.lessonlib-cleaner-status')
        # remove 'road' with its ×
        tags.locator('.jupyter-widget-tag', has_text='road').locator('.jupyter-widget-tag-close').dispatch_event('mousedown')
        expect(tags.locator('.jupyter-widget-tag:not(.jupyter-widget-taginput)')).to_have_text(['clear'], timeout=15_000)
        expect(status).to_contain_text('1 marked (0 delete, 1 tag edit)', timeout=15_000)
        # add 'water' from the '+ tag' menu, then type 'cloudy' into the tag field and leave it (a typed tag is
        # committed on the input's change event; headless Chromium does not fire it on Enter in a field with suggestions)
        first.locator('.lessonlib-cleaner-addtag select').select_option(label='water')
        expect(tags.locator('.jupyter-widget-tag:not(.jupyter-widget-taginput)')).to_have_text(['clear', 'water'], timeout=15_000)
        tags.click()
        box = tags.locator('input.jupyter-widget-taginput')
        box.press_sequentially('haze'); box.press('Tab')             # not a tag of this dataset: the control refuses it
        tags.click(); box.fill(''); box.press_sequentially('cloudy'); box.press('Tab')
        expect(tags.locator('.jupyter-widget-tag:not(.jupyter-widget-taginput)')).to_have_text(['clear', 'cloudy', 'water'], timeout=15_000)   # kept in the order of the tags
        assert selected(first.locator('.lessonlib-cleaner-addtag select')).replace('\xa0', ' ') == '+ tag'   # the menu is ready again
        expect(status).to_contain_text('1 marked (0 delete, 1 tag edit)', timeout=15_000)
        marked = tmp_path/'cleaner_tags_marked.png'
        page.locator('.lessonlib-cleaner').screenshot(path=str(marked))
        try: REPORT.mkdir(parents=True, exist_ok=True); shutil.copy(marked, REPORT/marked.name)
        except OSError: pass
        assert (data/'labels.csv').read_bytes() == csv0            # marking alone changes nothing on disk

        page.locator('.lessonlib-cleaner-apply').click()
        expect(status).to_have_text('Applied: 0 moved to the trash, 1 tag set(s) edited', timeout=15_000)
        lines = (data/'labels.csv').read_text().splitlines()
        assert lines[1] == '0,clear cloudy water' and lines[2:] == [f'{i},{t}' for i, t in enumerate(PLANET)][1:]

        page.locator('.lessonlib-cleaner-undo').click()
        expect(status).to_contain_text('Undone: 1 step(s)', timeout=15_000)
        assert (data/'labels.csv').read_bytes() == csv0            # byte for byte
    finally:
        page.screenshot(path=str(shot), full_page=True)
        try:
            REPORT.mkdir(parents=True, exist_ok=True); shutil.copy(shot, REPORT/shot.name)
        except OSError: pass
