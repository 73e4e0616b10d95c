"""Export round trips: TorchScript .pt and torch.export .pt2 give the eager output and load without project code."""

import subprocess
import sys
import warnings

import pytest
import torch

from insmix_fast.errors import ConfigError, InputError
from insmix_fast.gan.export import BlendModule, _example, export_blender, load_blender
from insmix_fast.gan.model import Generator


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    g = Generator(width=4).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # export itself must not leak TorchScript warnings
        pt = export_blender(g, d / "blender.pt", "torchscript")
        pt2 = export_blender(g, d / "other.pt2", "export")
    return g, pt, pt2


@pytest.mark.parametrize("batch,size", [(2, 64), (3, 48)])
def test_exported_forms_match_eager(exported, batch, size):
    g, pt, pt2 = exported
    args = _example(batch, size)
    with torch.no_grad():
        ref = BlendModule(g).eval()(*args)
        for path in (pt, pt2):
            out = load_blender(path)(*args)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    m = args[1] > 0.5
    assert torch.equal(ref[~m.expand_as(ref)], args[0][~m.expand_as(ref)])


def test_blender_from_both_files(exported):
    """Blender.from_file on each exported form gives the eager blend (a .pt2 module has no eval())."""
    from insmix_fast.gan import Blender

    g, pt, pt2 = exported
    x, m, o = _example(2, 48)
    ref = Blender(g, amp=False).blend(x, m, o)
    for path in (pt, pt2):
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            b = Blender.from_file(path, amp=False)
        torch.testing.assert_close(b.blend(x, m, o), ref, rtol=1e-5, atol=1e-6)


def test_load_needs_no_project_code(exported, tmp_path):
    _, pt, pt2 = exported
    code = (
        "import sys, warnings, torch\n"
        "warnings.simplefilter('ignore')\n"
        "x = torch.rand(1, 3, 32, 32); m = torch.zeros(1, 1, 32, 32); m[..., 4:12, 4:12] = 1\n"
        "o = torch.zeros(1, 1, 32, 32); o[..., 20:28, 20:28] = 1\n"
        f"a = torch.jit.load({str(pt)!r})(x, m, o)\n"
        f"b = torch.export.load({str(pt2)!r}).module()(x, m, o)\n"
        "assert a.shape == b.shape == x.shape\n"
        "assert 'insmix_fast' not in sys.modules\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_loader_prefers_pt2_and_hides_warnings(exported, tmp_path):
    g, pt, _ = exported
    export_blender(g, tmp_path / "b.pt", "torchscript")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = load_blender(tmp_path / "b.pt")
    assert isinstance(m, torch.jit.ScriptModule)
    assert not [x for x in w if "TorchScript" in str(x.message) or issubclass(x.category, DeprecationWarning)]
    export_blender(g, tmp_path / "b.pt2", "export")
    assert not isinstance(load_blender(tmp_path / "b.pt"), torch.jit.ScriptModule)  # .pt2 beside it wins


def test_export_errors(tmp_path):
    with pytest.raises(ConfigError):
        export_blender(Generator(width=4), tmp_path / "x.onnx", "onnx")
    with pytest.raises(InputError):
        load_blender(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError):
        load_blender(tmp_path / "junk.pt")
