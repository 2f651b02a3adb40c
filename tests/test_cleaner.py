"""Tests for the cleaner: the file-operation engine (lessonlib.cleaner: apply, undo, safety cases; on top of
lessonlib.journal: safe moves, the journal, CSV bytes), the ranking (lessonlib.suspects) and the widget logic
(lessonlib.cleaner_widget)."""
import os, sys, json, shutil, subprocess, textwrap, warnings
from pathlib import Path
import pytest
from lessonlib import cleaner as C
from lessonlib.cleaner import DatasetCleaner, CleanItem, TRASH
from lessonlib.journal import Journal


def make_folder(root, classes=('Coat', 'Shirt', 'Bag'), n=3, splits=('train', 'valid')):
    root = Path(root)
    for s in splits:
        for c in classes:
            (root/s/c).mkdir(parents=True, exist_ok=True)
            for i in range(n): (root/s/c/f'{c.lower()}{i}.png').write_bytes(f'{s}/{c}/{i}'.encode())
    return root


def make_csv(root, n=6, classes=('Coat', 'Shirt'), nl='\n', bom=False, extra_rows=()):
    root = Path(root); (root/'train').mkdir(parents=True)
    lines = ['id,label']
    for i in range(n):
        (root/'train'/f'im{i}.png').write_bytes(f'img{i}'.encode())
        lines.append(f'im{i},{classes[i % len(classes)]}')
    lines += list(extra_rows)
    (root/'labels.csv').write_bytes((b'\xef\xbb\xbf' if bom else b'') + (nl.join(lines) + nl).encode())
    return root


def snapshot(root):
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file() and TRASH not in p.relative_to(root).parts}


def trash_files(root):
    return [p for p in (Path(root)/TRASH).rglob('*') if p.is_file() and 'files' in p.parts]


# ---------------------------------------------------------------- marking and choices
def test_mark_validates_and_keeps_choices(tmp_path):
    root = make_folder(tmp_path/'d')
    cl = DatasetCleaner.from_folder(root)
    cl.mark('train/Coat/coat0.png', 'delete')
    cl.mark(root/'train/Coat/coat1.png', 'Shirt')
    cl.mark('train/Coat/coat2.png', 'Coat')               # own class = keep
    assert cl.choices == {'train/Coat/coat0.png': 'delete', 'train/Coat/coat1.png': 'Shirt'}
    cl.mark('train/Coat/coat0.png', 'keep')
    assert cl.choices == {'train/Coat/coat1.png': 'Shirt'}
    with pytest.raises(ValueError, match='one of the classes'): cl.mark('train/Coat/coat0.png', 'Hat')
    with pytest.raises(KeyError, match='not one of the files'): cl.mark('train/Coat/zzz.png', 'delete')
    with pytest.raises(ValueError, match='outside the dataset root'): cl.mark(tmp_path/'elsewhere.png', 'delete')


def test_class_named_like_a_choice_is_refused(tmp_path):
    with pytest.raises(ValueError, match="may not be called 'delete'"):
        DatasetCleaner(tmp_path, [], ['a', 'delete'])


def test_save_load_choices_survive_restart(tmp_path, warned_here):
    root = make_folder(tmp_path/'d')
    cl = DatasetCleaner.from_folder(root)
    cl.mark('train/Coat/coat0.png', 'delete'); cl.mark('valid/Bag/bag1.png', 'Coat')
    f = cl.save_choices()
    assert f == root/TRASH/'choices.json'
    cl2 = DatasetCleaner.from_folder(root)
    assert cl2.load_choices() == 2 and cl2.choices == cl.choices
    (root/'valid/Bag/bag1.png').unlink()                  # gone meanwhile: skipped with a warning
    cl3 = DatasetCleaner.from_folder(root)
    with pytest.warns(UserWarning, match='1 choice') as rec: assert cl3.load_choices(f) == 1
    warned_here(rec, '1 choice')
    (tmp_path/'bad.json').write_text('[1, 2]')
    with pytest.raises(ValueError, match='not a saved-choices file'): cl3.load_choices(tmp_path/'bad.json')
    with pytest.raises(FileNotFoundError): cl3.load_choices(tmp_path/'none.json')


# ---------------------------------------------------------------- apply / undo, folder layout
def test_dry_run_changes_nothing(tmp_path):
    root = make_folder(tmp_path/'d')
    before = snapshot(root)
    cl = DatasetCleaner.from_folder(root)
    cl.mark('train/Coat/coat0.png', 'delete'); cl.mark('train/Coat/coat1.png', 'Shirt')
    r = cl.apply(dry_run=True)
    assert r.dry_run and len(r.steps) == 2 and 'Planned' in repr(r)
    assert snapshot(root) == before and not (root/TRASH).exists()
    assert cl.choices                                     # still marked


def test_apply_then_undo_restores_exactly(tmp_path):
    root = make_folder(tmp_path/'d')
    before = snapshot(root)
    cl = DatasetCleaner.from_folder(root)
    cl.mark('train/Coat/coat0.png', 'delete'); cl.mark('train/Coat/coat1.png', 'Shirt'); cl.mark('valid/Bag/bag2.png', 'Coat')
    r = cl.apply()
    assert r.deleted == ['train/Coat/coat0.png']
    assert sorted(r.relabelled) == [('train/Coat/coat1.png', 'Shirt'), ('valid/Bag/bag2.png', 'Coat')]
    assert not (root/'train/Coat/coat0.png').exists()
    assert (root/'train/Shirt/coat1.png').read_bytes() == b'train/Coat/1'
    assert (root/'valid/Coat/bag2.png').exists()
    assert len(trash_files(root)) == 1                    # deleted = moved to the trash, never unlinked
    assert cl.items['train/Shirt/coat1.png'].label == 'Shirt' and 'train/Coat/coat0.png' not in cl.items
    assert cl.choices == {}
    u = cl.undo()
    assert 'Undone' in u.message and snapshot(root) == before
    assert trash_files(root) == []
    assert cl.items['train/Coat/coat1.png'].label == 'Coat' and 'train/Coat/coat0.png' in cl.items
    assert cl.choices == {'train/Coat/coat0.png': 'delete', 'train/Coat/coat1.png': 'Shirt', 'valid/Bag/bag2.png': 'Coat'}
    assert cl.undo().message == 'Nothing to undo.'


def test_apply_twice_is_a_noop(tmp_path):
    root = make_folder(tmp_path/'d')
    cl = DatasetCleaner.from_folder(root)
    cl.mark('train/Coat/coat0.png', 'delete')
    cl.apply()
    after = snapshot(root)
    r = cl.apply()
    assert r.message.startswith('Nothing to apply') and snapshot(root) == after
    # a second, stale cleaner with the same marks finds the files gone and says so
    stale = DatasetCleaner(root, [CleanItem('train/Coat/coat0.png', 'train', 'Coat')], ['Bag', 'Coat', 'Shirt'])
    stale.mark('train/Coat/coat0.png', 'delete')
    r = stale.apply()
    assert r.missing == ['train/Coat/coat0.png'] and 'gone' in r.message and snapshot(root) == after


def test_file_deleted_by_hand_is_reported_rest_applied(tmp_path):
    root = make_folder(tmp_path/'d')
    cl = DatasetCleaner.from_folder(root)
    cl.mark('train/Coat/coat0.png', 'delete'); cl.mark('train/Coat/coat1.png', 'Bag'); cl.mark('train/Shirt/shirt0.png', 'delete')
    (root/'train/Coat/coat1.png').unlink()               # the learner removed it in a file manager
    r = cl.apply()
    assert r.missing == ['train/Coat/coat1.png'] and '1 missing' in r.message
    assert r.deleted == ['train/Coat/coat0.png', 'train/Shirt/shirt0.png']
    assert not (root/'train/Shirt/shirt0.png').exists() and cl.choices == {}


def test_name_collision_gets_unique_name_nothing_overwritten(tmp_path):
    root = make_folder(tmp_path/'d')
    (root/'train/Shirt/coat0.png').write_bytes(b'I was here first')
    (root/'train/Shirt/coat0-1.png').write_bytes(b'me too')
    cl = DatasetCleaner.from_folder(root)
    cl.mark('train/Coat/coat0.png', 'Shirt')
    r = cl.apply()
    assert r.renamed == [('train/Shirt/coat0.png', 'train/Shirt/coat0-2.png')]
    assert (root/'train/Shirt/coat0.png').read_bytes() == b'I was here first'
    assert (root/'train/Shirt/coat0-1.png').read_bytes() == b'me too'
    assert (root/'train/Shirt/coat0-2.png').read_bytes() == b'train/Coat/0'
    assert 'renamed to avoid overwriting' in repr(r)
    cl.undo()
    assert (root/'train/Coat/coat0.png').read_bytes() == b'train/Coat/0'
    assert (root/'train/Shirt/coat0.png').read_bytes() == b'I was here first'


def test_two_files_same_name_into_one_class(tmp_path):
    root = make_folder(tmp_path/'d', n=1)
    (root/'train/Bag/coat0.png').write_bytes(b'bag named coat0')
    cl = DatasetCleaner.from_folder(root)
    cl.mark('train/Coat/coat0.png', 'Shirt'); cl.mark('train/Bag/coat0.png', 'Shirt')
    cl.apply()
    got = sorted(p.read_bytes() for p in (root/'train/Shirt').iterdir())
    assert got == sorted([b'bag named coat0', b'train/Coat/0', b'train/Shirt/0'])


def test_relabel_into_missing_class_folder_creates_and_undo_removes_it(tmp_path):
    root = make_folder(tmp_path/'d', splits=('train',))
    make_folder(root, classes=('Coat',), splits=('valid',))
    cl = DatasetCleaner(root, [CleanItem('valid/Coat/coat0.png', 'valid', 'Coat')], ['Bag', 'Coat', 'Shirt'])
    cl.mark('valid/Coat/coat0.png', 'Bag')
    r = cl.apply()
    assert r.steps[0] == {'op': 'mkdir', 'dir': 'valid/Bag'} and (root/'valid/Bag/coat0.png').exists()
    cl.undo()
    assert not (root/'valid/Bag').exists() and (root/'valid/Coat/coat0.png').exists()


def test_readonly_dataset_clear_error_no_partial_change(tmp_path, readonly):
    root = make_folder(tmp_path/'d')
    before = snapshot(root)
    cl = DatasetCleaner.from_folder(root)
    cl.mark('train/Coat/coat0.png', 'delete'); cl.mark('train/Shirt/shirt0.png', 'Bag')
    # only the LAST folder that a move needs is read-only: a naive loop would already have moved the first file
    readonly(root/'train/Bag')
    if os.access(root/'train/Bag', os.W_OK): pytest.skip('this file system ignores the read-only flag')
    with pytest.raises(PermissionError, match=r'not writable: .*train/Bag.*Nothing was changed'):
        cl.apply()
    readonly.undo()
    assert snapshot(root) == before and not (root/TRASH).exists()
    assert len(cl.choices) == 2                           # nothing lost: fix the permissions and apply again
    cl.apply()
    assert (root/'train/Bag/shirt0.png').exists()


def test_whole_dataset_readonly(tmp_path, readonly):
    root = make_folder(tmp_path/'d')
    before = snapshot(root)
    cl = DatasetCleaner.from_folder(root)
    cl.mark('valid/Coat/coat0.png', 'delete')
    dirs = [root] + [p for p in root.rglob('*') if p.is_dir()]
    readonly(*dirs)
    with pytest.raises(PermissionError, match='Nothing was changed'): cl.apply()
    readonly.undo()
    assert snapshot(root) == before


def test_new_files_untouched_by_undo(tmp_path):
    root = make_folder(tmp_path/'d')
    cl = DatasetCleaner.from_folder(root)
    cl.mark('train/Coat/coat0.png', 'delete'); cl.mark('train/Coat/coat1.png', 'Shirt')
    cl.apply()
    (root/'train/Coat/new.png').write_bytes(b'new image')
    (root/'train/Coat/coat0.png').write_bytes(b'a new file where the deleted one was')
    r = cl.undo()
    assert (root/'train/Coat/new.png').read_bytes() == b'new image'
    assert (root/'train/Coat/coat0.png').read_bytes() == b'a new file where the deleted one was'
    assert (root/'train/Coat/coat0-1.png').read_bytes() == b'train/Coat/0'
    assert r.renamed == [('train/Coat/coat0.png', 'train/Coat/coat0-1.png')] and 'new name' in r.message
    assert (root/'train/Coat/coat1.png').exists() and not (root/'train/Shirt/coat1.png').exists()


def test_undo_reports_file_removed_from_trash(tmp_path):
    root = make_folder(tmp_path/'d')
    cl = DatasetCleaner.from_folder(root)
    cl.mark('train/Coat/coat0.png', 'delete'); cl.mark('train/Coat/coat1.png', 'delete')
    cl.apply()
    trash_files(root)[0].unlink()                        # emptied by hand
    r = cl.undo()
    assert len(r.missing) == 1 and '1 missing' in r.message
    assert sum((root/'train/Coat'/f).exists() for f in ('coat0.png', 'coat1.png')) == 1


def test_several_applies_undo_in_reverse_order(tmp_path):
    root = make_folder(tmp_path/'d')
    s0 = snapshot(root)
    cl = DatasetCleaner.from_folder(root)
    cl.mark('train/Coat/coat0.png', 'Shirt'); cl.apply(); s1 = snapshot(root)
    cl.mark('train/Shirt/coat0.png', 'Bag'); cl.apply()   # the same file again, from its new place
    assert (root/'train/Bag/coat0.png').exists()
    cl.undo(); assert snapshot(root) == s1
    cl.undo(); assert snapshot(root) == s0
    assert cl.undo().message == 'Nothing to undo.'


def test_error_midway_rolls_back(tmp_path, monkeypatch):
    root = make_folder(tmp_path/'d')
    before = snapshot(root)
    cl = DatasetCleaner.from_folder(root)
    for f in ('coat0', 'coat1', 'coat2'): cl.mark(f'train/Coat/{f}.png', 'delete')
    real, n = C.move_file, []
    def flaky(src, dst):
        n.append(1)
        if len(n) == 3: raise OSError(5, 'Input/output error')       # the third move fails, once
        real(src, dst)
    monkeypatch.setattr(C, 'move_file', flaky)
    with pytest.raises(RuntimeError, match='failed at step 2.*rolled back'): cl.apply()
    monkeypatch.setattr(C, 'move_file', real)
    assert snapshot(root) == before and trash_files(root) == []
    assert len(cl.choices) == 3 and cl._pending() == []
    assert cl.undo().message == 'Nothing to undo.'


class Crash(BaseException):
    "Stands in for the process dying: not an Exception, so no handler runs."


@pytest.mark.parametrize('when', ['before', 'after'])
@pytest.mark.parametrize('layout', ['folder', 'csv'])
def test_crash_halfway_then_undo_in_a_new_session(tmp_path, monkeypatch, when, layout):
    root = make_folder(tmp_path/'d') if layout == 'folder' else make_csv(tmp_path/'d')
    before = snapshot(root)
    new = (lambda: DatasetCleaner.from_folder(root)) if layout == 'folder' else (lambda: DatasetCleaner.from_csv(root, 'train', 'labels.csv', '.png'))
    cl = new()
    keys = sorted(cl.items)
    cl.mark(keys[0], 'delete'); cl.mark(keys[1], 'delete'); cl.mark(keys[2], cl.classes[0] if cl.items[keys[2]].label != cl.classes[0] else cl.classes[1])
    real, n = C.move_file, []
    def dying(src, dst):
        if len(n) == 1:
            if when == 'after': real(src, dst)
            raise Crash()
        n.append(1); real(src, dst)
    monkeypatch.setattr(C, 'move_file', dying)
    with pytest.raises(Crash): cl.apply()
    monkeypatch.setattr(C, 'move_file', real)
    assert snapshot(root) != before
    fresh = new()                                         # a restarted kernel
    assert fresh._pending()
    fresh.mark(keys[3], 'delete')
    with pytest.raises(RuntimeError, match='interrupted'): fresh.apply()
    r = fresh.undo()
    assert 'interrupted' in r.message
    assert snapshot(root) == before and trash_files(root) == []
    assert fresh._pending() == []


CRASH_SCRIPT = textwrap.dedent('''
    import os, sys
    from lessonlib import cleaner as C
    root, layout, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cl = C.DatasetCleaner.from_folder(root) if layout == 'folder' else C.DatasetCleaner.from_csv(root, 'train', 'labels.csv', '.png')
    keys = sorted(cl.items)
    for key in keys[:3]: cl.mark(key, 'delete')
    other = [c for c in cl.classes if c != cl.items[keys[3]].label][0]
    cl.mark(keys[3], other)
    real, n = C.move_file, []
    def dying(src, dst):
        if len(n) == k: os._exit(3)                       # killed: no handler, no flush, nothing
        n.append(1); real(src, dst)
    C.move_file = dying
    cl.apply()
''')


@pytest.mark.parametrize('layout', ['folder', 'csv'])
def test_killed_process_then_undo(tmp_path, layout):
    root = make_folder(tmp_path/'d') if layout == 'folder' else make_csv(tmp_path/'d')
    before = snapshot(root)
    script = tmp_path/'crash.py'; script.write_text(CRASH_SCRIPT)
    p = subprocess.run([sys.executable, str(script), str(root), layout, '2'], capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stderr
    assert snapshot(root) != before
    cl = DatasetCleaner.from_folder(root) if layout == 'folder' else DatasetCleaner.from_csv(root, 'train', 'labels.csv', '.png')
    cl.undo()
    assert snapshot(root) == before


def test_journal_ignores_torn_last_line(tmp_path):
    j = Journal(tmp_path/'j.jsonl')
    j.append(txn='a', kind='begin', steps=[])
    with open(j.path, 'a') as f: f.write('{"txn": "a", "kind": "com')
    assert j.transactions()['a']['commit'] is False


# ---------------------------------------------------------------- CSV layout
@pytest.mark.parametrize('nl,bom', [('\n', False), ('\r\n', True)])
def test_csv_relabel_and_delete_then_undo_exact_bytes(tmp_path, nl, bom):
    root = make_csv(tmp_path/'d', nl=nl, bom=bom)
    before = snapshot(root)
    cl = DatasetCleaner.from_csv(root, 'train', 'labels.csv', suffix='.png', val_idxs=[4, 5])
    assert cl.items['train/im5.png'].split == 'valid'
    cl.mark('train/im0.png', 'Shirt'); cl.mark('train/im1.png', 'delete')
    r = cl.apply()
    text = (root/'labels.csv').read_bytes()
    assert text.startswith(b'\xef\xbb\xbf') == bom
    rows = text.decode('utf-8-sig').split(nl)
    assert rows[0] == 'id,label' and 'im0,Shirt' in rows and not any(x.startswith('im1,') for x in rows)
    assert not (root/'train/im1.png').exists() and len(trash_files(root)) == 1
    assert sorted(r.relabelled) == [('train/im0.png', 'Shirt')] and r.deleted == ['train/im1.png']
    assert cl.items['train/im0.png'].label == 'Shirt'
    cl.undo()
    assert snapshot(root) == before                       # byte for byte, line endings and BOM included


def test_csv_changed_after_apply_undo_reverts_only_our_rows(tmp_path):
    root = make_csv(tmp_path/'d')
    cl = DatasetCleaner.from_csv(root, 'train', 'labels.csv', suffix='.png')
    cl.mark('train/im0.png', 'Shirt'); cl.mark('train/im2.png', 'delete')
    cl.apply()
    with open(root/'labels.csv', 'a') as f: f.write('im9,Coat\n')      # the learner added a row meanwhile
    (root/'train/im9.png').write_bytes(b'new')
    r = cl.undo()
    assert r.problems and 'changed since' in r.problems[0]
    lines = (root/'labels.csv').read_text().splitlines()
    assert lines[:4] == ['id,label', 'im0,Coat', 'im1,Shirt', 'im2,Coat'] and lines[-1] == 'im9,Coat'
    assert (root/'train/im2.png').exists() and (root/'train/im9.png').read_bytes() == b'new'


def test_csv_entry_outside_root_is_refused(tmp_path, warned_here):
    outside = tmp_path/'x.png'; outside.write_bytes(b'not yours')
    root = make_csv(tmp_path/'a'/'d', extra_rows=['../../../x,Coat'])
    with pytest.warns(UserWarning, match=r"outside the dataset root are refused: line 8: '\.\./\.\./\.\./x'") as rec:
        cl = DatasetCleaner.from_csv(root, 'train', 'labels.csv', suffix='.png')
    warned_here(rec, 'outside the dataset root')
    assert all('..' not in k for k in cl.items)
    with pytest.raises(ValueError, match='outside the dataset root'): cl.mark('train/../../../x.png', 'delete')
    with pytest.raises(ValueError, match='outside the dataset root'): cl.mark(outside, 'delete')
    # items handed in directly are checked too
    with pytest.warns(UserWarning, match='outside the dataset root') as rec:
        cl2 = DatasetCleaner(root, [CleanItem('train/../../../x.png', 'train', 'Coat')], ['Coat', 'Shirt'], 'csv', 'labels.csv', 'train')
    assert cl2.items == {}
    warned_here(rec, 'outside the dataset root')
    cl.mark('train/im0.png', 'delete'); cl.apply()
    assert outside.read_bytes() == b'not yours'


def test_csv_row_missing_is_a_clear_error(tmp_path):
    root = make_csv(tmp_path/'d')
    cl = DatasetCleaner.from_csv(root, 'train', 'labels.csv', suffix='.png')
    cl.mark('train/im0.png', 'Shirt')
    (root/'labels.csv').write_text('id,label\nim1,Shirt\n')
    with pytest.raises(ValueError, match='no row for train/im0.png'): cl.apply()


def test_symlinked_folder_out_of_root_refused(tmp_path):
    root = make_folder(tmp_path/'d', classes=('Coat',), splits=('train',))
    ext = tmp_path/'ext'; ext.mkdir(); (ext/'e.png').write_bytes(b'e')
    (root/'train'/'Link').symlink_to(ext, target_is_directory=True)
    with pytest.warns(UserWarning, match='outside the dataset root'):
        cl = DatasetCleaner.from_folder(root)
    assert 'train/Link/e.png' not in cl.items


# ---------------------------------------------------------------- the widget (driven from Python; the browser test drives it for real)
import numpy as np
from types import SimpleNamespace
from PIL import Image
from lessonlib.cleaner_widget import ImageClassifierCleaner

CLS = ['Bag', 'Coat', 'Shirt']


def make_png_data(root, n=3, splits=('train', 'valid')):
    "Real PNGs (so lessonlib.data can read them): root/<split>/<class>/<class><i>.png."
    root = Path(root)
    for s in splits:
        for ci, c in enumerate(CLS):
            (root/s/c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new('RGB', (8, 8), (80 * ci, 40 * i, 100 if s == 'train' else 200)).save(root/s/c/f'{c.lower()}{i}.png')
    return root


def fake_interp(root, split='valid', n=3):
    "Synthetic predictions: in each class image 0 is the most surprising (loss highest), then 1, 2, ..."
    fnames = [Path(root)/split/c/f'{c.lower()}{i}.png' for c in CLS for i in range(n)]
    y = np.repeat(np.arange(3), n)
    probs = np.full((len(y), 3), 0.1)
    probs[np.arange(len(y)), y] = np.tile(np.linspace(0.05, 0.9, n), 3)
    probs /= probs.sum(1, keepdims=True)
    return SimpleNamespace(probs=probs, targets=y, classes=CLS, fnames=fnames)


def keys_shown(w): return [f.relative_to(w.root).as_posix() for f in w.fns]


def test_widget_sorted_by_loss_with_pages(tmp_path):
    root = make_png_data(tmp_path/'d')
    w = ImageClassifierCleaner(fake_interp(root), max_n=2)
    assert w.w_split.options == (('Valid', 'valid'),) and w.w_class.value == 'Bag'
    assert keys_shown(w) == ['valid/Bag/bag0.png', 'valid/Bag/bag1.png']
    assert w.w_page.value == 'page 1 of 2 (3 images)' and w.w_prev.disabled and not w.w_next.disabled
    w.w_next.click()
    assert keys_shown(w) == ['valid/Bag/bag2.png'] and w.w_next.disabled
    item = w.w_grid.children[0]
    assert 'lessonlib-cleaner-item' in item._dom_classes
    labels = [c.value for c in item.children if isinstance(c, type(w.w_page))]
    assert labels[0] == 'bag2.png' and labels[1].startswith('Bag 0.')
    dd = item.children[-1]
    assert [v for _, v in dd.options] == ['keep', 'delete', 'Coat', 'Shirt']


def test_widget_choices_persist_across_class_and_split_switches(tmp_path):
    root = make_png_data(tmp_path/'d')
    w = ImageClassifierCleaner({'train': fake_interp(root, 'train'), 'valid': fake_interp(root, 'valid')}, max_n=5)
    assert [v for _, v in w.w_split.options] == ['train', 'valid']
    w.w_class.value = 'Coat'
    w._dd['valid/Coat/coat0.png'].value = 'delete'
    w._dd['valid/Coat/coat1.png'].value = 'Shirt'
    assert '2 marked (1 delete, 1 relabel)' in w.w_status.value
    w.w_split.value = 'train'; w.w_class.value = 'Bag'
    w._dd['train/Bag/bag0.png'].value = 'Coat'
    w.w_split.value = 'valid'; w.w_class.value = 'Coat'                   # back again: nothing forgotten
    assert w._dd['valid/Coat/coat0.png'].value == 'delete' and w._dd['valid/Coat/coat1.png'].value == 'Shirt'
    assert w.delete() == [0] and w.change() == [(1, 'Shirt')]
    assert len(w.choices) == 3
    w.mark('valid/Coat/coat2.png', 'Bag')                                  # from code: the dropdown follows
    assert w._dd['valid/Coat/coat2.png'].value == 'Bag'


def test_widget_apply_undo_buttons(tmp_path):
    root = make_png_data(tmp_path/'d')
    before = snapshot(root)
    w = ImageClassifierCleaner(fake_interp(root), max_n=20)
    w.w_class.value = 'Coat'
    w._dd['valid/Coat/coat0.png'].value = 'delete'
    w._dd['valid/Coat/coat1.png'].value = 'Shirt'
    w.w_apply.click()
    assert w.w_status.value == 'Applied: 1 moved to the trash, 1 relabelled'
    assert keys_shown(w) == ['valid/Coat/coat2.png']
    assert (root/'valid/Shirt/coat1.png').exists() and not (root/'valid/Coat/coat0.png').exists()
    w.w_class.value = 'Shirt'
    assert 'valid/Shirt/coat1.png' in keys_shown(w)                        # it now shows up under its new class
    w.w_undo.click()
    assert w.w_status.value.startswith('Undone: 2 step(s)') and snapshot(root) == before
    w.w_class.value = 'Coat'
    assert keys_shown(w)[:2] == ['valid/Coat/coat0.png', 'valid/Coat/coat1.png']
    assert w._dd['valid/Coat/coat0.png'].value == 'delete'                 # undo brings the marks back too


def test_widget_errors_go_to_the_status_line(tmp_path, readonly):
    root = make_png_data(tmp_path/'d')
    w = ImageClassifierCleaner(fake_interp(root), choices_file=None)
    w.mark('valid/Bag/bag0.png', 'Coat')
    readonly(root/'valid/Coat')
    w.w_apply.click()                                                      # no exception escapes into the front end
    readonly.undo()
    assert w.w_status.value.startswith('Error: cannot apply: not writable') and 'Nothing was changed' in w.w_status.value


def test_widget_choices_autosaved_survive_restart(tmp_path):
    root = make_png_data(tmp_path/'d')
    w = ImageClassifierCleaner(fake_interp(root))
    w._dd['valid/Bag/bag0.png'].value = 'delete'
    assert json.loads((root/TRASH/'choices.json').read_text())['choices'] == {'valid/Bag/bag0.png': 'delete'}
    w2 = ImageClassifierCleaner(fake_interp(root))                         # a new kernel
    assert w2.choices == {'valid/Bag/bag0.png': 'delete'} and w2.w_status.value.startswith('Restored 1 choice')
    assert w2._dd['valid/Bag/bag0.png'].value == 'delete'
    w2.apply()
    assert json.loads((root/TRASH/'choices.json').read_text())['choices'] == {}
    w3 = ImageClassifierCleaner(fake_interp(root), choices_file=None)      # opting out
    assert w3.choices == {}


def test_widget_text_fallback_and_static_path(tmp_path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    root = make_png_data(tmp_path/'d')
    w = ImageClassifierCleaner(fake_interp(root), choices_file=None)
    b = w._repr_mimebundle_()
    assert 'application/vnd.jupyter.widget-view+json' in b
    assert 'widgets cannot render here' in b['text/plain'] and 'show_static' in b['text/plain'] and 'apply_choices' in b['text/plain']
    assert b['text/plain'].count('widgets cannot render') == 1
    assert 'widgets cannot render here' in repr(w)                         # a plain terminal or script: no kernel
    fig = w.show_static('valid', 'Coat', ncols=2)
    assert isinstance(fig, matplotlib.figure.Figure)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0].startswith('coat0.png') and len(titles) == 3 and w.static_keys[0] == 'valid/Coat/coat0.png'
    assert fig.number not in plt.get_fignums()                             # pyplot keeps it not: Jupyter shows it once
    t = w.choices_template('valid', 'Coat')
    assert t == {'valid/Coat/coat0.png': 'keep', 'valid/Coat/coat1.png': 'keep', 'valid/Coat/coat2.png': 'keep'}
    t['valid/Coat/coat0.png'] = 'delete'; t['valid/Coat/coat1.png'] = 'Bag'
    r = w.apply_choices(t)
    assert r.deleted == ['valid/Coat/coat0.png'] and (root/'valid/Bag/coat1.png').exists()
    with pytest.raises(ValueError, match='no images'): w.show_static('train')


def test_from_classification_interpretation_and_learner(tmp_path):
    from lessonlib.interpret import ClassificationInterpretation
    from lessonlib.data import ImageData
    root = make_png_data(tmp_path/'d')
    fi = fake_interp(root)
    interp = ClassificationInterpretation(fi.probs, fi.targets, CLS, fnames=fi.fnames)
    w = ImageClassifierCleaner(interp, choices_file=None)
    assert w.root == root.resolve() and w.layout == 'folder' and len(w.items) == 9
    np.testing.assert_allclose(w.items['valid/Coat/coat0.png'].loss, interp.losses[3], rtol=1e-6)
    # a learner-like object: losses for train (data.fix_ds) and valid come from predict_with_targs
    data = ImageData.from_paths(root)
    asked = []
    def predict_with_targs(ds='valid'):
        asked.append(ds)
        d = {'train': data.fix_ds, 'valid': data.val_ds}[ds]
        p = np.full((len(d), 3), 1 / 3); return np.log(p), np.asarray(d.y)
    learn = SimpleNamespace(data=data, predict_with_targs=predict_with_targs)
    w = ImageClassifierCleaner(learn, choices_file=None)
    assert asked == ['train', 'valid'] and len(w.items) == 18
    np.testing.assert_allclose(w.items['train/Bag/bag0.png'].loss, np.log(3), rtol=1e-6)
    multi = SimpleNamespace(probs=fi.probs, targets=np.eye(3)[fi.targets], classes=CLS, fnames=fi.fnames, is_multi=True)
    with pytest.raises(ValueError, match='edits the labels CSV'): ImageClassifierCleaner(multi)   # tag sets live in a CSV
    with pytest.raises(ValueError, match='has no `fnames`'):
        ImageClassifierCleaner(SimpleNamespace(probs=fi.probs, targets=fi.targets, classes=CLS, fnames=None))


def test_rebuilt_data_has_new_labels_and_cache_key_changes(tmp_path):
    import torch.nn as nn
    from lessonlib.data import ImageData
    from lessonlib.precompute import cache_parts, cache_key
    root = make_png_data(tmp_path/'d')
    data = ImageData.from_paths(root)
    key = lambda d: cache_key(cache_parts(nn.Identity(), {'train': d.fix_ds, 'valid': d.val_ds}, root=root))
    k0 = key(data)
    assert key(ImageData.from_paths(root)) == k0                           # unchanged dataset: same cache
    w = ImageClassifierCleaner(fake_interp(root, 'train'), choices_file=None)
    w.mark('train/Coat/coat0.png', 'Shirt'); w.mark('train/Bag/bag1.png', 'delete')
    w.apply()
    d2 = ImageData.from_paths(root)
    names = {p.relative_to(root).as_posix(): d2.classes[int(y)] for p, y in zip(d2.trn_ds.fnames, d2.trn_y)}
    assert names['train/Shirt/coat0.png'] == 'Shirt' and 'train/Bag/bag1.png' not in names and len(names) == 8
    assert key(d2) != k0                                                   # the precompute cache invalidates itself
    w.undo()
    assert key(ImageData.from_paths(root)) == k0                           # same files, same mtimes: the old cache is valid again


def test_out_of_fold_ranking_finds_flipped_labels(tmp_path):
    import torch
    from lessonlib.suspects import oof_probs
    from lessonlib.core import set_seed, check_at_least
    seed = set_seed(0)                                   # LESSONLIB_SEED varies it in bench/margins.py
    rng = np.random.default_rng(seed)
    n, F, C = 600, 32, 3
    y = rng.integers(0, C, n); X = rng.normal(size=(n, F)) + 3 * np.eye(C, F)[y]
    noisy = y.copy(); flip = rng.choice(n, 12, replace=False); noisy[flip] = (y[flip] + 1) % C
    p = oof_probs(X, noisy, C, k=5, seed=seed)
    assert p.shape == (n, C) and np.allclose(p.sum(1), 1)
    loss = -np.log(p[np.arange(n), noisy])
    check_at_least(np.isin(np.argsort(-loss)[:12], flip).mean(), 0.65, 'test_cleaner: flipped among the 12 highest oof losses')
    with pytest.raises(ValueError, match='k >= 2'): oof_probs(X[:3], noisy[:3], C, k=5)
    # each fold's head never sees the images it scores: a unique feature pattern is unlearnable out of fold
    Xu = np.eye(n)[:, :n]; pu = oof_probs(Xu, noisy, C, k=5, dim=0, seed=seed)
    check_at_least(1 - (pu.argmax(1) == noisy).mean(), 0.4, 'test_cleaner: oof error on unlearnable features')
    # through the widget
    root = make_png_data(tmp_path/'d')
    w = ImageClassifierCleaner(fake_interp(root), choices_file=None)
    feats = {'valid': np.repeat(np.eye(3), 3, axis=0) * 5 + rng.normal(size=(9, 3)) * 0.1}
    losses = w.rank_out_of_fold(features=feats, k=3)
    assert set(losses) == set(w.items) and all(np.isfinite(v) for v in losses.values())
    w.w_rank.value = 'oof'
    assert len(w.fns) == 3
    w2 = ImageClassifierCleaner(fake_interp(root), choices_file=None)
    w2.w_rank.value = 'oof'                                                # no features: a message, not a crash
    assert w2.w_status.value.startswith('Cannot rank by out-of-fold loss') and w2.w_rank.value == 'loss'


def test_find_duplicates_shown_in_widget(tmp_path):
    from lessonlib.suspects import cosine_pairs
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 16)); X[7] = X[3] * 2.0; X[40] = X[12] + 1e-3
    pairs = cosine_pairs(X, 0.999, block=8)
    assert [(i, j) for i, j, _ in pairs] == [(3, 7), (12, 40)] or [(i, j) for i, j, _ in pairs] == [(12, 40), (3, 7)]
    root = make_png_data(tmp_path/'d')
    w = ImageClassifierCleaner(fake_interp(root), max_n=4, choices_file=None)
    F = rng.normal(size=(9, 8)); F[4] = F[0]                                # coat1 duplicates bag0
    d = w.find_duplicates(0.999, features={'valid': F})
    assert [(a, b) for a, b, _ in d] == [('valid/Bag/bag0.png', 'valid/Coat/coat1.png')]
    assert w.w_split.value == 'dups' and keys_shown(w) == ['valid/Bag/bag0.png', 'valid/Coat/coat1.png']
    assert w.w_class.disabled
    w._dd['valid/Coat/coat1.png'].value = 'delete'
    w.apply()
    assert not (root/'valid/Coat/coat1.png').exists() and keys_shown(w) == []


def test_engine_and_ranking_import_no_widgets():
    "The engine (lessonlib.cleaner) and the ranking (lessonlib.suspects) work headless: neither imports ipywidgets."
    code = "import sys, lessonlib.cleaner, lessonlib.suspects; assert 'ipywidgets' not in sys.modules, 'ipywidgets imported'"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# ---------------------------------------------------------------- multi-label: tag sets in a planet-style CSV
TAGS = ['clear', 'cloudy', 'road', 'water']


def make_planet(root, rows=('clear road', 'cloudy', 'water clear', 'road water clear', 'cloudy water', 'clear', 'road cloudy'), nl='\n', bom=False):
    "A tiny planet-style dataset: train/<i>.png (real PNGs) and labels.csv `image_name,tags` with space-separated tags."
    root = Path(root); (root/'train').mkdir(parents=True)
    for i in range(len(rows)): Image.new('RGB', (8, 8), (40 * i, 100, 150)).save(root/'train'/f'{i}.png')
    text = nl.join(['image_name,tags'] + [f'{i},{t}' for i, t in enumerate(rows)]) + nl
    (root/'labels.csv').write_bytes((b'\xef\xbb\xbf' if bom else b'') + text.encode())
    return root


def planet_cleaner(root): return DatasetCleaner.from_csv(root, 'train', 'labels.csv', suffix='.png', label_delim=' ')


def test_multilabel_marks_are_tag_sets(tmp_path):
    cl = planet_cleaner(make_planet(tmp_path/'p'))
    assert cl.is_multi and cl.classes == TAGS and cl.items['train/2.png'].label == 'water clear'
    assert cl.tags_of('train/2.png') == ['water', 'clear']
    assert cl.edit_tags('train/0.png', add='water', remove='road') == ['clear', 'water']
    cl.mark('train/1.png', ['water', 'cloudy']); cl.mark('train/3.png', 'delete')
    cl.mark('train/2.png', ['clear', 'water'])                # the same set in another order: nothing to change
    assert cl.choices == {'train/0.png': 'clear water', 'train/1.png': 'cloudy water', 'train/3.png': 'delete'}
    assert cl.tags_of('train/1.png') == ['cloudy', 'water'] and cl.tags_of('train/1.png', chosen=False) == ['cloudy']
    cl.edit_tags('train/1.png', remove='water')                # back to its label: the mark goes away
    assert 'train/1.png' not in cl.choices
    before = dict(cl.choices)
    with pytest.raises(ValueError, match=r"unknown tag\(s\) \['haze'\]: the tags of this dataset are \['clear', 'cloudy', 'road', 'water'\]"):
        cl.edit_tags('train/0.png', add='haze')
    with pytest.raises(ValueError, match="unknown tag"): cl.edit_tags('train/0.png', remove='Haze')
    with pytest.raises(ValueError, match="unknown tag"): cl.mark('train/0.png', 'clear haze')
    with pytest.raises(ValueError, match="at least one tag.*'delete'"): cl.mark('train/5.png', [])
    with pytest.raises(ValueError, match="at least one tag"): cl.edit_tags('train/5.png', remove='clear')
    assert cl.choices == before                                # a refused edit changes nothing
    with pytest.raises(ValueError, match='single-label|one class per image'):
        DatasetCleaner.from_csv(make_csv(tmp_path/'s'), 'train', 'labels.csv', suffix='.png').tags_of('train/im0.png')
    with pytest.raises(ValueError, match='labels CSV'): DatasetCleaner(tmp_path, [], TAGS, tag_delim=' ')   # folder layout


@pytest.mark.parametrize('nl,bom', [('\n', False), ('\r\n', True)])
def test_multilabel_apply_writes_csv_then_undo_restores_bytes(tmp_path, nl, bom):
    root = make_planet(tmp_path/'p', nl=nl, bom=bom)
    start, csv0 = snapshot(root), (root/'labels.csv').read_bytes()
    cl = planet_cleaner(root)
    cl.edit_tags('train/0.png', add='water', remove='road'); cl.edit_tags('train/4.png', add='road'); cl.mark('train/1.png', 'delete')
    plan = cl.apply(dry_run=True)
    assert snapshot(root) == start and 'labels.csv: 0 clear road -> clear water' in plan.lines()
    r = cl.apply()
    assert r.message == 'Applied: 1 moved to the trash, 2 tag set(s) edited'
    assert r.relabelled == [('train/0.png', 'clear water'), ('train/4.png', 'cloudy road water')]
    want = ['image_name,tags', '0,clear water', '2,water clear', '3,road water clear', '4,cloudy road water', '5,clear', '6,road cloudy']
    assert (root/'labels.csv').read_bytes() == (b'\xef\xbb\xbf' if bom else b'') + (nl.join(want) + nl).encode()
    assert not (root/'train/1.png').exists() and len(trash_files(root)) == 1
    recs = Journal(root/TRASH/'journal.jsonl').records()
    assert [x['kind'] for x in recs][-1] == 'commit' and recs[0]['choices']['train/0.png'] == 'clear water'
    assert cl.tags_of('train/0.png') == ['clear', 'water'] and not cl.choices
    # the data layer reads the edited CSV as the new truth
    import lessonlib.csvdata   # noqa: F401  ImageData.from_csv
    from lessonlib.data import ImageData
    d = ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[0, 1], suffix='.png')
    assert d.is_multi and d.classes == TAGS and d.trn_ds.y[-2].tolist() == [1, 0, 0, 0]
    u = planet_cleaner(root).undo()                            # a fresh session, as after a kernel restart
    assert u.message.startswith('Undone: 2 step(s)')
    assert (root/'labels.csv').read_bytes() == csv0 and snapshot(root) == start


def test_multilabel_csv_outside_root_is_never_written(tmp_path):
    root = make_planet(tmp_path/'p')
    outside = tmp_path/'labels-elsewhere.csv'; shutil.copy(root/'labels.csv', outside)
    cl = DatasetCleaner(root, planet_cleaner(root).items.values(), TAGS, layout='csv', csv_path=outside, folder='train', tag_delim=' ')
    cl.edit_tags('train/0.png', add='water')
    before = outside.read_bytes(), snapshot(root)
    with pytest.raises(ValueError, match='outside the dataset root'): cl.apply()
    assert (outside.read_bytes(), snapshot(root)) == before and not (root/TRASH/'journal.jsonl').exists()


def planet_interp(root, data):
    "Made-up sigmoid outputs for the validation rows of `data`: image 0 is predicted wrong on every tag."
    y = data.val_ds.y
    p = np.clip(y * 0.7 + 0.2, 0, 1); p[0] = 1 - y[0] * 0.9 - 0.05
    return SimpleNamespace(probs=p, targets=y, classes=data.classes, fnames=data.val_ds.fnames, is_multi=True)


def test_multilabel_widget_ranks_by_bce_and_edits_tags(tmp_path):
    import torch, torch.nn.functional as F
    import lessonlib.csvdata   # noqa: F401
    from lessonlib.data import ImageData
    root = make_planet(tmp_path/'p')
    data = ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[0, 1, 2, 3], suffix='.png')
    it = planet_interp(root, data)
    w = ImageClassifierCleaner(it, data=data, choices_file=None)
    assert w.is_multi and w.layout == 'csv' and w.w_class.description == 'Tag:'
    ref = F.binary_cross_entropy(torch.tensor(it.probs).double(), torch.tensor(it.targets).double(), reduction='none').mean(1).numpy()
    assert w.view('valid') == [f'train/{i}.png' for i in np.argsort(-ref, kind='stable')]
    np.testing.assert_allclose([w.items[f'train/{i}.png'].loss for i in range(4)], ref, rtol=1e-6)
    assert w.items['train/0.png'].pred == 'cloudy water' and w.items['train/0.png'].label == 'clear road'
    assert w.view('valid', 'road') == [f'train/{i}.png' for i in np.argsort(-ref, kind='stable') if i in (0, 3)]   # the tag filter
    w.w_class.value = 'road'
    tags, dele = w._dd['train/0.png']
    assert list(tags.value) == ['clear', 'road'] and list(tags.allowed_tags) == TAGS and not dele.value
    tags.value = ['clear', 'road', 'water']
    assert w.choices == {'train/0.png': 'clear road water'} and w.w_status.value.startswith('1 marked (0 delete, 1 tag edit)')
    tags.value = []                                            # an empty set is refused, said, and the control put back
    assert w.w_status.value.startswith('Error: a tag set needs at least one tag') and list(tags.value) == ['clear', 'road', 'water']
    w.mark('train/3.png', 'delete')
    assert w._dd['train/3.png'][1].value                       # marked from code: the box follows
    w._dd['train/3.png'][1].value = False
    assert 'train/3.png' not in w.choices
    w.edit_tags('train/3.png', remove='water')
    assert list(w._dd['train/3.png'][0].value) == ['clear', 'road']
    w.w_apply.click()
    assert w.w_status.value == 'Applied: 0 moved to the trash, 2 tag set(s) edited'
    assert (root/'labels.csv').read_text().splitlines()[1:5] == ['0,clear road water', '1,cloudy', '2,water clear', '3,clear road']
    w.w_undo.click()
    assert w.w_status.value.startswith('Undone: 1 step(s)') and (root/'labels.csv').read_text().splitlines()[1] == '0,clear road'
    assert w.choices == {'train/0.png': 'clear road water', 'train/3.png': 'clear road'}   # the undone choices come back
    with pytest.raises(ValueError, match='single-label data'): w.rank_out_of_fold(features={'valid': np.eye(4)})
    fig = w.show_static('valid', n=2, ncols=2)
    assert 'clear road → cloudy water' in fig.axes[0].get_title()


def test_multilabel_learner_losses_are_mean_bce(tmp_path):
    import torch, torch.nn.functional as F
    import lessonlib.csvdata   # noqa: F401
    from lessonlib.data import ImageData
    root = make_planet(tmp_path/'p')
    data = ImageData.from_csv(root, 'train', 'labels.csv', val_idxs=[0, 1], suffix='.png')
    logits = {s: torch.randn(len(d), 4, generator=torch.Generator().manual_seed(i))
              for i, (s, d) in enumerate((('train', data.fix_ds), ('valid', data.val_ds)))}
    def predict_with_targs(ds='valid'):
        d = {'train': data.fix_ds, 'valid': data.val_ds}[ds]
        return torch.sigmoid(logits[ds]).numpy(), np.asarray(d.y)      # what Learner.predict returns for multi-label data: probabilities
    w = ImageClassifierCleaner(SimpleNamespace(data=data, predict_with_targs=predict_with_targs), choices_file=None)
    assert len(w.items) == 7 and w.is_multi
    for s, d in (('train', data.fix_ds), ('valid', data.val_ds)):
        ref = F.binary_cross_entropy_with_logits(logits[s], torch.tensor(d.y), reduction='none').mean(1).numpy()
        keys = [Path(f).relative_to(root.resolve()).as_posix() for f in d.fnames]
        np.testing.assert_allclose([w.items[k].loss for k in keys], ref, rtol=1e-5)
        pred = torch.sigmoid(logits[s]).numpy() >= 0.5
        assert [w.items[k].pred for k in keys] == [' '.join(t for t, v in zip(TAGS, row) if v) for row in pred]


def test_multilabel_choices_saved_and_restored(tmp_path, warned_here):
    root = make_planet(tmp_path/'p')
    cl = planet_cleaner(root)
    cl.edit_tags('train/0.png', add='water'); cl.mark('train/5.png', 'delete')
    f = cl.save_choices()
    cl2 = planet_cleaner(root)
    assert cl2.load_choices(f) == 2 and cl2.choices == cl.choices
