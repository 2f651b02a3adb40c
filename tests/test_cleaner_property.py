"""Property test for lessonlib.cleaner: random sequences of marks, apply, crashes, kernel restarts, new files and undo
never lose a byte, and undoing everything gives back exactly the files we started with (plus any new ones). The same
for a multi-label CSV whose tag sets are edited."""
import os, shutil, tempfile
from collections import Counter
from pathlib import Path
from hypothesis import given, settings, strategies as st, HealthCheck, event
from lessonlib.cleaner import DatasetCleaner, TRASH

CLASSES = ('A', 'B', 'C')
MULTI_TAGS = ('A B', 'C', 'B A', 'A', 'C B A')
TAG_SETS = (['A'], ['A', 'B'], ['C', 'B'], 'C A', ['A', 'B', 'C'])
SHM = '/dev/shm' if os.path.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK) else None   # tmpfs: fsync is free


class Crash(BaseException):
    "The process dies: not an Exception, so apply() cannot roll back."


def make(root, layout):
    if layout == 'folder':
        for s in ('train', 'valid'):
            for c in CLASSES[:2]:
                (root/s/c).mkdir(parents=True)
                for i in range(2): (root/s/c/f'{c}{i}.png').write_bytes(f'{s}{c}{i}'.encode())
    else:
        (root/'train').mkdir(parents=True)
        rows = ['id,label']
        for i in range(5):
            (root/'train'/f'{i}.png').write_bytes(f'img{i}'.encode()); rows.append(f'{i},{CLASSES[i % 3]}')
        (root/'labels.csv').write_text('\n'.join(rows) + '\n')


def make_multi(root):
    "A planet-style CSV: image_name,tags with space-separated tag sets, CRLF line ends (kept byte for byte)."
    (root/'train').mkdir(parents=True)
    rows = ['image_name,tags']
    for i, t in enumerate(MULTI_TAGS):
        (root/'train'/f'{i}.png').write_bytes(f'img{i}'.encode()); rows.append(f'{i},{t}')
    (root/'labels.csv').write_bytes(('\r\n'.join(rows) + '\r\n').encode())


def open_cleaner(root, layout):
    if layout == 'folder': return DatasetCleaner.from_folder(root)
    if layout == 'multi': return DatasetCleaner.from_csv(root, 'train', 'labels.csv', suffix='.png', label_delim=' ')
    return DatasetCleaner.from_csv(root, 'train', 'labels.csv', suffix='.png', val_idxs=[3, 4])


def dataset(root):
    "Dataset files and bytes, the cleaner's folder left out."
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob('*')
            if p.is_file() and TRASH not in p.relative_to(root).parts}


def all_images(root):
    "Bytes of every image anywhere under root, trash included: nothing may ever be lost or duplicated."
    return Counter(p.read_bytes() for p in root.rglob('*.png') if p.is_file())


mark = st.tuples(st.just('mark'), st.integers(0, 30), st.integers(0, 4))
crash = st.tuples(st.just('crash'), st.integers(0, 2), st.booleans())
action = st.one_of(
    st.tuples(st.just('apply')), st.tuples(st.just('apply')),
    st.tuples(st.just('undo')), st.tuples(st.just('undo')),
    crash, crash,
    st.tuples(st.just('restart')),
    st.tuples(st.just('new_file'), st.integers(0, 30)),
)
# rounds of a few marks followed by one action, so that most sequences really move files
rounds = st.lists(st.tuples(st.lists(mark, min_size=1, max_size=4), action), min_size=1, max_size=4)


@settings(max_examples=1000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(layout=st.sampled_from(['folder', 'csv', 'multi']), rounds=rounds)
def test_random_sequences_apply_undo_lose_nothing(layout, rounds):
    tmp = Path(tempfile.mkdtemp(dir=SHM))
    real_step = DatasetCleaner._do_step
    try:
        root = tmp/'data'; make_multi(root) if layout == 'multi' else make(root, layout)
        start, images = dataset(root), all_images(root)
        cl, n_new = open_cleaner(root, layout), 0
        for o in [o for marks, act in rounds for o in marks + [act]]:
            kind = o[0]
            if kind == 'mark':
                keys = sorted(cl.items)
                if keys:
                    choices = ['keep', 'delete'] + (list(TAG_SETS) if layout == 'multi' else list(cl.classes))
                    cl.mark(keys[o[1] % len(keys)], choices[o[2] % len(choices)])
            elif kind in ('apply', 'crash'):
                if cl._pending():
                    try: cl.apply(); assert not cl.choices, 'apply() must refuse while a transaction is pending'
                    except RuntimeError as e: assert 'interrupted' in str(e)
                    continue
                if kind == 'apply':
                    if cl.apply().steps: event('apply moved files')
                else:
                    k, after, calls = o[1], o[2], []
                    def dying(self, txn, step):                # dies before or after step k (move, mkdir or CSV rewrite)
                        if len(calls) == k:
                            if after: real_step(self, txn, step)
                            raise Crash()
                        calls.append(1); real_step(self, txn, step)
                    DatasetCleaner._do_step = dying
                    try: cl.apply()
                    except Crash:
                        event('crashed halfway'); cl = open_cleaner(root, layout)   # the kernel died: start again from disk
                    finally: DatasetCleaner._do_step = real_step
            elif kind == 'undo':
                if cl.undo().steps: event('undo moved files')
            elif kind == 'restart': cl = open_cleaner(root, layout)
            elif kind == 'new_file':
                folder = root/'train'/CLASSES[o[1] % 2] if layout == 'folder' else root/'train'
                data = f'new{n_new}'.encode()
                (folder/f'new{n_new}.png').write_bytes(data)
                start[(folder/f'new{n_new}.png').relative_to(root).as_posix()] = data
                images[data] += 1; n_new += 1
            assert all_images(root) == images                  # nothing lost, nothing copied, at every step
        cl = open_cleaner(root, layout)                        # undo everything, from a fresh session
        for _ in range(50):
            if cl.undo().message == 'Nothing to undo.': break
        assert dataset(root) == start
        assert not [p for p in (root/TRASH).rglob('*') if p.is_file() and 'files' in p.relative_to(root).parts]
    finally:
        DatasetCleaner._do_step = real_step
        shutil.rmtree(tmp, ignore_errors=True)
