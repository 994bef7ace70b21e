"""End-to-end tests of the `ibsr` command: `index` on a folder of good and broken meshes, `query` with an image
or a text (table, JSON and picture), resuming an interrupted index build, and the errors a user can meet.
Everything runs on files written here, with the seeded random-weight encoder `random-ppat-tiny-s`, except the
end-to-end test, which trains a tiny run first and searches with it."""
import io, os, sys, json, struct, argparse, contextlib, subprocess
from pathlib import Path
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENC = 'random-ppat-tiny-s'

pytestmark = pytest.mark.usefixtures('isolated_env')   # conftest.py

GOOD = [('chair', 0, '.obj'), ('chair', 1, '.ply'), ('table', 0, '.obj'), ('sofa', 0, '.stl'), ('table', 1, '.off')]

def write_folder(root: Path) -> Path:
    "Five good meshes in three category folders plus five broken files of different kinds."
    from ibsr_nb.shapes import make_shape
    for cat, seed, ext in GOOD:
        (root/cat).mkdir(parents=True, exist_ok=True)
        make_shape(cat, seed).mesh.export(root/cat/f'{cat}_{seed}{ext}')
    (root/'chair'/'empty.obj').write_text('')
    (root/'table'/'nan.obj').write_text('v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n')
    (root/'sofa'/'garbage.ply').write_bytes(b'ply\nformat binary_little_endian 1.0\nelement vertex 99\n' + os.urandom(64))
    (root/'chair'/'points_only.obj').write_text('v 0 0 0\nv 1 0 0\nv 0 1 0\n')
    (root/'flat.stl').write_text('solid x\nendsolid x\n')
    (root/'notes.txt').write_text('not a mesh, ignored')
    return root

BROKEN = {'chair/empty.obj', 'table/nan.obj', 'sofa/garbage.ply', 'chair/points_only.obj', 'flat.stl'}

def query_image(path: Path, mode='RGB') -> Path:
    from PIL import Image
    from ibsr_nb.shapes import make_shape
    from ibsr_nb.viz import shape_thumbnail
    img = Image.fromarray(shape_thumbnail(make_shape('chair', 1).mesh, 80, azimuth=-40, background=(90, 120, 160)))
    img.convert(mode).save(path)
    return path

def ibsr(*args, check=True):
    "Run the installed console script in a fresh process."
    exe = Path(sys.executable).with_name('ibsr')
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', 'import sys; from ibsr_nb.cli import main; sys.exit(main())']
    r = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    if check and r.returncode != 0: raise AssertionError(f'ibsr {args} -> {r.returncode}\n{r.stdout}\n{r.stderr}')
    return r

def run_main(*args):
    "In-process `main`: (exit code, stdout, stderr)."
    from ibsr_nb.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_index_then_query_end_to_end(tmp_path):
    "The console script indexes the good meshes, reports the broken ones, and answers image and text queries."
    meshes = write_folder(tmp_path/'meshes')
    idx = tmp_path/'out'/'shapes.index'
    r = ibsr('index', meshes, '--encoder', ENC, '--out', idx, '--chunk', '3', '--json')
    res = json.loads(r.stdout)
    assert res['indexed'] == len(GOOD) and res['files'] == len(GOOD) + len(BROKEN)
    skipped = {s['file']: s['reason'] for s in res['skipped']}
    assert set(skipped) == BROKEN
    assert 'empty' in skipped['chair/empty.obj'] and 'NaN' in skipped['table/nan.obj']
    assert all(reason for reason in skipped.values())

    from ibsr_nb.index import ShapeIndex
    ix = ShapeIndex.load(idx, encoder=ENC, dim=128)
    assert sorted(ix.shapes['shape_id']) == sorted(f'{c}/{c}_{s}' for c, s, _ in GOOD)
    assert set(ix.shapes['category']) == {'chair', 'table', 'sofa'}
    assert ix.meta['weights'] == 'random:seed=0' and ix.meta['preprocessing']['n_points'] == 1024

    img = query_image(tmp_path/'query.png')
    pic = tmp_path/'pic'/'result.png'
    r = ibsr('query', img, '--index', idx, '-k', '3', '--out', pic, '--truth', 'chair/chair_1', '--html', tmp_path/'top.html')
    lines = r.stdout.strip().splitlines()
    assert lines[0].split() == ['rank', 'score', 'shape_id', 'category', 'path']
    assert [l.split()[0] for l in lines[1:4]] == ['1', '2', '3']
    assert pic.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and pic.stat().st_size > 2000
    assert f'wrote {pic}' in lines and f"wrote {tmp_path/'top.html'}" in lines       # says where the files went
    assert (tmp_path/'top.html').stat().st_size > 1_000_000            # plotly.js inlined

    code, out, err = run_main('query', '--text', 'a wooden chair', '--index', idx, '-k', '10', '--json', '--no-picture')
    assert code == 0, err
    js = json.loads(out)
    assert len(js['results']) == len(GOOD)                               # gallery smaller than k: all of it
    assert [x['rank'] for x in js['results']] == list(range(1, len(GOOD) + 1))
    scores = [x['score'] for x in js['results']]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)


def test_query_results_match_a_direct_embedding(tmp_path):
    "The table's scores are the cosine similarities of the query and shape embeddings computed directly."
    from ibsr_nb.encoders import load_encoder
    from ibsr_nb.search import mesh_points, embed_points, embed_images
    from ibsr_nb.data import load_image
    meshes = write_folder(tmp_path/'meshes')
    assert run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'s.index')[0] == 0
    img = query_image(tmp_path/'q.png', mode='RGBA')                   # an RGBA file is converted on load
    code, out, err = run_main('query', img, '--index', tmp_path/'s.index', '--json', '--no-picture', '-k', '5')
    assert code == 0, err
    res = json.loads(out)['results']
    enc = load_encoder(ENC, quiet=True)
    q = embed_images(enc, load_image(img)[None])[0]
    for r in res:
        z = embed_points(enc, mesh_points(r['path'], enc)[None])[0]
        assert abs(float(q @ z) - r['score']) < 1e-4, (r, float(q @ z))


def test_index_resumes_after_interruption(tmp_path, monkeypatch):
    "A build killed after its first chunk resumes where it stopped and gives the same index as an uninterrupted one."
    import ibsr_nb.search as search
    from ibsr_nb.index import ShapeIndex
    meshes = write_folder(tmp_path/'meshes')
    real = search.embed_points
    calls = []
    def crash_after_first(enc, pts, batch_size=64):
        if calls: raise KeyboardInterrupt('killed')
        calls.append(len(pts)); return real(enc, pts, batch_size)
    monkeypatch.setattr(search, 'embed_points', crash_after_first)
    code, out, err = run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'a.index', '--chunk', '2', '--batch', '2')
    assert code == 130 and 'run the same command again to resume' in err
    parts = tmp_path/'a.index.parts'
    chunks = list(parts.glob('emb_*.npy'))
    assert not (tmp_path/'a.index').exists() and len(chunks) == 1
    done = [json.loads(l) for l in (parts/'progress-000.jsonl').read_text().splitlines()]
    assert sum(d['status'] == 'ok' for d in done) == 2                   # the first chunk with meshes in it
    assert all(d.get('chunk') == chunks[0].name for d in done if d['status'] == 'ok')

    seen = []
    def counting(enc, pts, batch_size=64): seen.append(len(pts)); return real(enc, pts, batch_size)
    monkeypatch.setattr(search, 'embed_points', counting)
    code, out, err = run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'a.index', '--chunk', '2', '--batch', '2')
    assert code == 0, err
    assert f'resuming: {len(done)} of 10 files already done' in err
    n_good_left = len(GOOD) - sum(d['status'] == 'ok' for d in done)
    assert sum(seen) == n_good_left                                      # nothing embedded twice

    assert run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'b.index')[0] == 0
    a, b = ShapeIndex.load(tmp_path/'a.index'), ShapeIndex.load(tmp_path/'b.index')
    assert sorted(a.shapes['shape_id']) == sorted(b.shapes['shape_id'])
    qa = a.search(np.eye(128, dtype=np.float32)[:4], 5)
    order = {s: i for i, s in enumerate(b.shapes['shape_id'])}
    xa = np.stack([np.asarray(a.faiss.reconstruct(i)) for i in range(len(a))])
    xb = np.stack([np.asarray(b.faiss.reconstruct(order[s])) for s in a.shapes['shape_id']])
    np.testing.assert_allclose(xa, xb, atol=1e-5)
    assert qa[1].shape == (4, 5)


def test_reindex_embeds_only_new_and_changed_files(tmp_path, monkeypatch):
    import ibsr_nb.search as search
    from ibsr_nb.shapes import make_shape
    from ibsr_nb.index import ShapeIndex
    meshes = write_folder(tmp_path/'meshes')
    assert run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'s.index')[0] == 0
    (meshes/'bed').mkdir()
    make_shape('bed', 0).mesh.export(meshes/'bed'/'bed_0.obj')
    (meshes/'chair'/'empty.obj').unlink()
    real, seen = search.embed_points, []
    monkeypatch.setattr(search, 'embed_points', lambda enc, pts, bs=64: (seen.append(len(pts)), real(enc, pts, bs))[1])
    code, out, err = run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'s.index')
    assert code == 0, err
    assert sum(seen) == 1                                                # only the new bed
    ix = ShapeIndex.load(tmp_path/'s.index')
    assert 'bed/bed_0' in set(ix.shapes['shape_id']) and len(ix) == len(GOOD) + 1
    assert 'chair/empty.obj' not in out                                  # deleted files are no longer reported


def test_changed_settings_are_refused_on_resume(tmp_path):
    meshes = write_folder(tmp_path/'meshes')
    assert run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'s.index')[0] == 0
    code, out, err = run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'s.index', '--up-axis', 'z')
    assert code == 2 and 's.index.parts: holds partial work made with other settings' in err


def test_user_errors_exit_2_with_a_clear_message(tmp_path):
    meshes = write_folder(tmp_path/'meshes')
    (tmp_path/'empty_dir').mkdir()
    (tmp_path/'all_bad').mkdir(); (tmp_path/'all_bad'/'a.obj').write_text('')
    cases = [
        (['index', tmp_path/'nope', '--encoder', ENC, '--out', tmp_path/'x.index'], 'nope: mesh folder not found'),
        (['index', tmp_path/'empty_dir', '--encoder', ENC, '--out', tmp_path/'x.index'], 'no mesh files found'),
        (['index', tmp_path/'all_bad', '--encoder', ENC, '--out', tmp_path/'x.index'], 'none of the 1 mesh files could be read'),
        (['index', meshes, '--encoder', 'no-such-encoder', '--out', tmp_path/'x.index'], "no-such-encoder: unknown encoder; known:"),
        (['index', meshes, '--encoder', 'openshape-g14', '--out', tmp_path/'x.index'], 'openshape-g14: needs its published weights file'),
        (['index', meshes, '--encoder', 'cmic-tiny', '--out', tmp_path/'x.index'], 'cannot build or query an index'),
        (['index', meshes, '--encoder', ENC, '--out', tmp_path/'x.index', '--chunk', '0'], '--chunk: must be at least 1'),
        (['query', '--index', tmp_path/'x.index'], 'give a query IMAGE or --text'),
    ]
    for args, msg in cases:
        code, out, err = run_main(*args)
        assert code == 2 and msg in err, (args, code, err)
        assert err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err, err

    assert run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'s.index')[0] == 0
    img = query_image(tmp_path/'q.png')
    raw = (tmp_path/'s.index').read_bytes()
    (tmp_path/'cut.index').write_bytes(raw[:len(raw) - 40])
    (tmp_path/'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 30)
    import torch
    from ibsr_nb.models.point import create_point_encoder
    with torch.random.fork_rng():
        torch.manual_seed(5); torch.save(create_point_encoder('ppat-tiny-s').state_dict(), tmp_path/'other.pt')
    torch.save({'not': torch.zeros(1)}, tmp_path/'junk.pt')
    cases = [
        (['query', img, '--index', tmp_path/'cut.index'], 'cut.index: truncated'),
        (['query', img, '--index', tmp_path/'missing.index'], 'missing.index: index file not found'),
        (['query', img, '--index', tmp_path/'s.index', '--encoder', 'random-ppat-tiny-l'], "built with encoder 'random-ppat-tiny-s'"),
        (['query', img, '--index', tmp_path/'s.index', '--checkpoint', tmp_path/'other.pt'], '--checkpoint: goes with --encoder NAME'),
        (['query', img, '--index', tmp_path/'s.index', '--encoder', tmp_path/'junk.pt'], 'junk.pt: not a checkpoint of `ibsr train`'),
        (['query', img, '--index', tmp_path/'s.index', '--encoder', 'openshape-g14'], 'needs its published weights file'),
        (['query', tmp_path/'bad.png', '--index', tmp_path/'s.index'], 'bad.png'),
        (['query', tmp_path/'none.png', '--index', tmp_path/'s.index'], 'none.png: image file not found'),
        (['query', img, '--text', 'a chair', '--index', tmp_path/'s.index'], 'not both'),
        (['query', img, '--index', tmp_path/'s.index', '-k', '0'], '-k: must be at least 1'),
    ]
    for args, msg in cases:
        code, out, err = run_main(*args, '--no-picture')
        assert code == 2 and msg in err, (args, code, err)
        assert err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err, err


def test_query_several_images_in_one_process(tmp_path):
    """`ibsr query A B C`: each photo's table is the one it gets alone, each gets its picture (OUT-STEM.png, beside --out)
    and its 3D page; a photo that cannot be read is named and skipped, the others are still answered, and the exit code is
    2. Every output path is refused before the model loads."""
    meshes = write_folder(tmp_path/'meshes')
    assert run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'s.index')[0] == 0
    a, b = query_image(tmp_path/'a.png'), query_image(tmp_path/'b.png', mode='L')
    (tmp_path/'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 30)
    alone = {p.name: json.loads(run_main('query', p, '--index', tmp_path/'s.index', '-k', '3', '--json', '--no-picture')[1])
             for p in (a, b)}
    code, out, err = run_main('query', a, tmp_path/'bad.png', b, '--index', tmp_path/'s.index', '-k', '3', '--json',
                              '--out', tmp_path/'pics'/'q.png', '--html', tmp_path/'pics'/'q.html')
    got = json.loads(out)
    assert code == 2 and [Path(r['query']['image']).name for r in got] == ['a.png', 'b.png'], (code, out, err)
    assert [r['results'] for r in got] == [alone['a.png']['results'], alone['b.png']['results']]
    assert got[0]['results'] != got[1]['results']                          # two photos, two rankings
    assert sorted(p.name for p in (tmp_path/'pics').iterdir()) == ['q-a.html', 'q-a.png', 'q-b.html', 'q-b.png']
    assert f"error: {tmp_path/'bad.png'}: " in err and 'error: 1 of 3 query images could not be searched' in err, err
    code, out, err = run_main('query', a, b, '--index', tmp_path/'s.index', '--no-picture')   # the tables, one after the other
    assert code == 0 and out.count('rank  score') == 2 and f'query: {b}' in out, out
    (tmp_path/'dir-b.png').mkdir()                                         # b's picture would be a folder: nothing searched
    code, out, err = run_main('query', a, b, '--index', tmp_path/'s.index', '--out', tmp_path/'dir.png')
    assert code == 2 and out == '' and 'dir-b.png' in err and 'is a directory' in err, (out, err)
    assert not (tmp_path/'dir-a.png').exists()


def test_index_mismatch_between_encoders(tmp_path):
    "An index made by another encoder (name or dimension) than the query side is refused."
    from ibsr_nb.index import ShapeIndex, IndexMismatchError
    ix = ShapeIndex(512, 'flat', encoder='openshape-b32', weights='sha256:abc')
    ix.add(np.random.default_rng(0).standard_normal((3, 512)), ['a', 'b', 'c'])
    ix.save(tmp_path/'b32.index')
    img = query_image(tmp_path/'q.png')
    code, out, err = run_main('query', img, '--index', tmp_path/'b32.index', '--encoder', ENC, '--no-picture')
    assert code == 2 and "built with encoder 'openshape-b32', but the query side uses 'random-ppat-tiny-s'" in err
    with pytest.raises(IndexMismatchError, match='holds 512-d embeddings'):
        ShapeIndex.load(tmp_path/'b32.index', dim=128)


def test_demo_still_works(tmp_path):
    code, out, err = run_main('demo', '--out', tmp_path/'demo')
    assert code == 0 and 'Acc@1' in out
    assert sorted(p.name for p in (tmp_path/'demo').iterdir()) == ['config.yaml', 'result.json']


def probe(code: str) -> str:
    "The last line `code` prints in a fresh interpreter (what a new `ibsr` process has imported)."
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip().splitlines()[-1]

def test_help_and_version_do_not_import_torch():
    "The CLI is argument parsing only: `--help` of every command and `--version` never import torch."
    assert probe("import sys; from ibsr_nb.cli import main, COMMANDS\n"
                 "for argv in (['--help'], ['--version'], *[[c, '--help'] for c in COMMANDS]):\n"
                 "    try: main(argv)\n"
                 "    except SystemExit as e: assert e.code == 0, (argv, e.code)\n"
                 "print('torch' in sys.modules)") == 'False'

def test_argument_errors_come_before_torch_loads():
    "A command's argument errors are refused in a fraction of a second: the exit code and message, torch never imported."
    cases = [(['index', 'meshes', '--out', 'x.index', '--chunk', '0'], '--chunk: must be at least 1'),
             (['index', 'meshes', '--out', 'x.index', '--batch', '-1'], '--batch: must be at least 1'),
             (['query', '--index', 'x.index'], 'not both and not neither'),
             (['query', 'p.png', '--index', 'x.index', '-k', '0'], '-k: must be at least 1'),
             (['query', '--text', ' ', '--index', 'x.index'], '--text: the text is empty'),
             (['query', 'p.png', '--index', 'x.index', '--checkpoint', 'w.pt'], '--checkpoint: goes with --encoder NAME'),
             (['query', 'a.png', 'b.png', '--index', 'x.index', '--truth', 'chair_1'], '--truth: names the shape of one'),
             (['reproduce', '--jobs', '0'], '--jobs: must be at least 1'),
             (['reproduce', '--tower-weights', 'x.pt'], '--tower-weights: expects NAME=FILE'),
             (['serve', '--index', 'x.index', '--port', '70000'], '--port: must be from 0 to 65535'),
             (['serve', '--index', 'x.index', '-k', '101'], '-k: must be from 1 to 100')]
    got = probe("import sys, io, contextlib, json; from ibsr_nb.cli import main\n"
                f"out = []\nfor argv in {[a for a, _ in cases]!r}:\n"
                "    err = io.StringIO()\n"
                "    with contextlib.redirect_stderr(err): code = main(argv)\n"
                "    out.append([code, err.getvalue()])\n"
                "print(json.dumps([out, 'torch' in sys.modules]))")
    results, torch_loaded = json.loads(got)
    for (argv, msg), (code, err) in zip(cases, results):
        assert code == 2 and err.startswith('error: ') and msg in err and err.count('\n') == 1, (argv, code, err)
    assert not torch_loaded

def test_shape_only_work_does_not_import_open_clip():
    """What `ibsr index` loads (the search module, a shipped encoder's point side) leaves open_clip and torchvision
    unimported (about 5 s of start-up); the first use of a tower imports open_clip with the project's tiny configs."""
    assert probe("import sys, torch; from ibsr_nb.search import load_encoder\n"
                 "enc = load_encoder('ibsr-l'); enc.encode_points(torch.rand(2, 1024, 6))\n"
                 "before = sorted({'open_clip', 'torchvision'} & set(sys.modules))\n"
                 "from ibsr_nb.models.image import open_clip\n"
                 "print(before, enc.tower.embed_dim, 'ibsr-tiny-vit-96' in open_clip.list_models())") == "[] 128 True"


def help_text(*argv) -> str:
    "What `ibsr ARGV --help` prints (in-process: argparse exits after printing)."
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        from ibsr_nb.cli import main
        main([*argv, '--help'])
    assert e.value.code == 0
    return ' '.join(out.getvalue().split())            # argparse wraps lines: compare with single spaces


def test_help_shows_defaults_and_choices():
    "Every option's help states its default; encoder and benchmark names are listed; query announces its picture path."
    from ibsr_nb.cli import COMMANDS, ENCODER_NAMES, BENCHMARK_NAMES, build_parser
    from ibsr_nb.encoders import ENCODERS
    from ibsr_nb.data import BENCHMARKS, REAL_BENCHMARKS
    assert ENCODER_NAMES == tuple(ENCODERS) and BENCHMARK_NAMES == BENCHMARKS + tuple(REAL_BENCHMARKS)
    sub = next(a for a in build_parser()._actions if a.dest == 'command').choices
    for name in COMMANDS:
        assert '(default:' in help_text(name) or name == 'encoders'
        for a in sub[name]._actions[1:]:                                 # after -h
            assert a.help, f'{name} {a.dest}: no help text'
            if a.required or type(a) is argparse._StoreConstAction: continue      # a choice of flags: one says 'default'
            assert 'default' in sub[name]._get_formatter()._get_help_string(a), f'{name} {a.dest}: no default in its help'
    assert '(default; about 10 min' in help_text('reproduce') and '(default: quick)' not in help_text('reproduce')
    for name in ('index', 'query'):
        text = help_text(name).replace('- ', '-')                        # argparse breaks long names at hyphens
        assert all(n in text for n in ENCODER_NAMES), name
    assert '(default: ibsr-l)' in help_text('index')
    assert 'the paths written are printed (default: query_results.png)' in help_text('query')
    assert '{pix3d-like,cars-like,shape-centric,pix3d,stanford-cars,comp-cars}' in help_text('evaluate')
    r = ibsr('evaluate', 'runs/x', '--benchmark', 'pix3d-lke', check=False)         # refused by the parser, before any work
    assert r.returncode == 2 and r.stderr.startswith("error: argument --benchmark: invalid choice: 'pix3d-lke' (choose from")
    assert "'pix3d-like'" in r.stderr and "'comp-cars'" in r.stderr


def test_config_command_writes_a_config_train_accepts(tmp_path):
    "`ibsr config MODE` prints a commented YAML of every TrainConfig field that `ibsr train` loads as is; 2 steps train from it."
    import yaml, dataclasses
    from ibsr_nb.model import TrainConfig
    from ibsr_nb.cli import starting_values
    for mode in ('pretrain', 'finetune', 'scratch'):
        code, out, err = run_main('config', mode)
        assert code == 0, err
        lines = [l for l in out.splitlines() if not l.startswith('#')]
        top = {l.split(':')[0] for l in lines if not l.startswith(' ')}
        assert top == {f.name for f in dataclasses.fields(TrainConfig)}, mode              # every field, data_root too
        assert all('  # ' in l for l in lines), [l for l in lines if '  # ' not in l]     # each with its description
        assert yaml.safe_load(out)['mode'] == mode
        code, msg, err = run_main('config', mode, '--out', tmp_path/f'{mode}.yaml')
        assert code == 0 and (tmp_path/f'{mode}.yaml').read_text() == out and f"wrote {tmp_path/f'{mode}.yaml'}" in msg
        cfg = TrainConfig.load(tmp_path/f'{mode}.yaml').validate(f'{mode}.yaml')       # the loader of `ibsr train`
        assert cfg == TrainConfig(**starting_values(mode))
    assert TrainConfig.load(tmp_path/'finetune.yaml').init == 'ibsr-l'
    code, out, err = run_main('config', 'finetune', '--out', tmp_path)                   # a folder: refused
    assert code == 2 and err.startswith('error: --out')
    # the user's edit: two tiny steps, then the command that trains it
    small = {'steps': 2, 'batch_size': 4, 'eval_every': 2, 'save_every': 2, 'warmup_steps': 1, 'quick': 'true'}
    text = '\n'.join(f"{l.split(':')[0]}: {small[l.split(':')[0]]}" if l.split(':')[0] in small else l
                     for l in (tmp_path/'finetune.yaml').read_text().splitlines())
    (tmp_path/'tiny.yaml').write_text(text)
    code, out, err = run_main('train', tmp_path/'tiny.yaml', '--out', tmp_path/'run')
    assert code == 0, err
    assert out.startswith('finetune on pix3d-like: 2/2 steps') and (tmp_path/'run'/'checkpoints'/'best.pt').exists(), out


def test_debug_shows_the_traceback(tmp_path):
    code, out, err = run_main('query', '--index', tmp_path/'missing.index', '--text', 'x')
    assert code == 2 and 'Traceback' not in err
    code, out, err = run_main('--debug', 'query', '--index', tmp_path/'missing.index', '--text', 'x')
    assert code == 2 and 'Traceback' in err and err.rstrip().splitlines()[-1].startswith('error: ')


def test_encoders_command_lists_the_namespace():
    code, out, err = run_main('encoders', '--json')
    assert code == 0, err
    rows = {r['name']: r for r in json.loads(out)}
    assert {'random-ppat-tiny-s', 'openshape-g14', 'ulip2-pointbert', 'cmic-tiny', 'cmah-tiny'} <= set(rows)
    assert rows['openshape-g14']['point_params'] == 32_326_080 and rows['openshape-g14']['embed_dim'] == 1280
    from ibsr_nb.baselines.cmic import CMIC_CONFIGS
    from ibsr_nb.baselines.cmah import CMAH_CONFIGS
    assert {n for n, r in rows.items() if r['kind'] == 'baseline'} == set(CMIC_CONFIGS) | set(CMAH_CONFIGS)


def test_torchrun_sharded_index_equals_one_process(tmp_path):
    "`ibsr index` under torchrun with 2 CPU processes shards the files and rank 0 merges: the same index as one process."
    from ibsr_nb.index import ShapeIndex
    meshes = write_folder(tmp_path/'meshes')
    assert run_main('index', meshes, '--encoder', ENC, '--out', tmp_path/'one.index', '--chunk', '2')[0] == 0
    env = dict(os.environ, IBSR_NUM_THREADS='1', OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m', 'ibsr_nb.cli',
                        'index', str(meshes), '--encoder', ENC, '--out', str(tmp_path/'two.index'), '--chunk', '2', '--json'],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout[r.stdout.index('{'):])
    assert summary['world_size'] == 2 and summary['indexed'] == len(GOOD)
    ranks = {p.name.split('_')[1] for p in (tmp_path/'two.index.parts').glob('emb_*.npy')}
    assert ranks == {'000', '001'}                                        # both processes embedded files
    a, b = ShapeIndex.load(tmp_path/'one.index'), ShapeIndex.load(tmp_path/'two.index')
    assert list(a.shapes['shape_id']) == list(b.shapes['shape_id'])
    xa = np.stack([a.faiss.reconstruct(i) for i in range(len(a))])
    xb = np.stack([b.faiss.reconstruct(i) for i in range(len(b))])
    np.testing.assert_allclose(xa, xb, atol=1e-6)


def test_train_index_query_end_to_end(tmp_path):
    """`ibsr train` a short fine-tuning, `ibsr index` the benchmark's gallery meshes with it, `ibsr query` its test photos:
    the right shape is found far more often than by chance, through the same commands a user types."""
    from PIL import Image
    from ibsr_nb.data import load_benchmark
    from ibsr_nb.train import query_photos
    (tmp_path/'run.yaml').write_text('mode: finetune\ninit: ibsr-s\npoint_encoder: ppat-tiny-s\ntower: ibsr-tiny-vit-96\n'
                                     'benchmark: pix3d-like\nquick: true\nimage_source: both\nval_fraction: 0.5\n'
                                     'steps: 20\nbatch_size: 16\nlr: 0.0001\nwarmup_steps: 2\n'
                                     'eval_every: 20\nsave_every: 20\nseed: 0\n')   # a short fine-tuning of the shipped S
    code, out, err = run_main('train', tmp_path/'run.yaml', '--out', tmp_path/'run')
    assert code == 0, err
    bench = load_benchmark('pix3d-like', quick=True)
    gallery = bench.gallery('test')
    for i in gallery:
        row = bench.shapes.iloc[int(i)]
        (tmp_path/'meshes'/row['category']).mkdir(parents=True, exist_ok=True)
        bench.shape(int(i)).mesh.export(tmp_path/'meshes'/f"{row['shape_id']}.obj")
    code, out, err = run_main('index', tmp_path/'meshes', '--encoder', tmp_path/'run', '--out', tmp_path/'g.index')
    assert code == 0 and f'indexed {len(gallery)} of {len(gallery)}' in out, err
    from ibsr_nb.search import Searcher
    searcher = Searcher.open(tmp_path/'g.index', tmp_path/'run')
    rows = bench.query_rows('test')
    photos = query_photos(bench, rows)
    truths = bench.shapes['shape_id'].to_numpy()[bench.queries['shape_idx'].to_numpy()[rows]]
    for j in range(8):                                                   # the command a user types, photo by photo ...
        Image.fromarray(photos[j]).save(tmp_path/f'q{j}.png')
        code, out, err = run_main('query', tmp_path/f'q{j}.png', '--index', tmp_path/'g.index', '--encoder', tmp_path/'run',
                                  '--json', '--no-picture')
        assert code == 0, err
        cli_ids = [x['shape_id'] for x in json.loads(out)['results']]
        lib_ids = list(searcher.search(tmp_path/f'q{j}.png', k=10)['shape_id'])
        assert cli_ids == lib_ids
    ranked = [list(searcher.search(p, k=10)['shape_id']) for p in photos]   # ... and every test photo through the library
    hits1 = sum(r[0] == t for r, t in zip(ranked, truths)); hits10 = sum(t in r for r, t in zip(ranked, truths))
    n, g = len(rows), len(gallery)
    print(f'end to end: {n} test photos, gallery {g}: Acc@1 {hits1 / n:.3f} (chance {1 / g:.3f}), '
          f'Acc@10 {hits10 / n:.3f} (chance {10 / g:.3f})')
    assert hits10 / n > 10 / g + 3 * np.sqrt((10 / g) * (1 - 10 / g) / n)   # three binomial SEs above chance
    assert hits1 / n > 2 / g                                             # and the first hit at twice chance
