"""Structure that keeps the disclosure structural: no import cycles, no encoder outside the writers,
a StampedFrame that cannot be forged, and a finalized file verified again before it gets its name."""

from __future__ import annotations

import ast
import copy
import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
from facecomp.disclosure.stamp import StampedFrame, Stamper
from facecomp.errors import DisclosureError, MetadataError
from mediagen import pattern, write_clip

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"plugin": "facecomp", "models": "facecomp.models"}


def _modules():
    """(path, dotted module name, is package) for every Python file of the package."""
    for folder, dotted in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            yield path, ".".join([dotted, *parts]) if parts else dotted, is_pkg


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never imported at run time)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _unit(module: str) -> str:
    """The node of the package graph a module belongs to: its first-level package (facecomp.video,
    facecomp.models), or the top-level module itself (facecomp.effect, facecomp.errors)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def _imports(path: Path, module: str, is_pkg: bool):
    here = module if is_pkg else module.rsplit(".", 1)[0]
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # from . import x: x may be a subpackage
                for a in node.names:
                    yield f"{target}.{a.name}", node.lineno
            else:
                yield target, node.lineno


def _graph() -> dict[str, dict[str, list[str]]]:
    edges: dict[str, dict[str, list[str]]] = {}
    for path, module, is_pkg in _modules():
        if path.name == "__main__.py":  # an entry point (python -m): nothing imports it
            continue
        src = _unit(module)
        if src == "facecomp":  # the root __init__: names and version only
            continue
        for target, line in _imports(path, module, is_pkg):
            if not target.startswith("facecomp"):
                continue
            dst = _unit(target)
            if dst not in (src, "facecomp"):
                edges.setdefault(src, {}).setdefault(dst, []).append(f"{path.relative_to(REPO)}:{line}")
    return edges


def _cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(edges) | {w for d in edges.values() for w in d}):
        if v not in index:
            visit(v)
    return out


def test_no_package_imports_in_a_circle():
    edges = _graph()
    assert "facecomp.video" in edges and "facecomp.disclosure" in edges["facecomp.video"], "the scan sees imports"
    problems = []
    for comp in _cycles(edges):
        where = [f"{a} -> {b} ({', '.join(edges[a][b][:2])})" for a in comp for b in comp if b in edges.get(a, {})]
        problems.append(" | ".join(where))
    assert not problems, "package imports in a circle:\n" + "\n".join(problems)


def test_the_cycle_check_catches_a_cycle():
    assert _cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b": []}}) == []


# ------------------------------------------------------------------------------------------------ encoders

# Where an image or video encoder may be called, and why. Everything else must hand a StampedFrame to
# facecomp.video.writer.VideoWriter (clips, sequences) or facecomp.disclosure.stills (pictures).
ALLOWED = {
    ("plugin/video/writer.py", "av.open(w)"): "the video writer itself: it takes only StampedFrame objects",
    ("plugin/video/writer.py", "imencode"): "the video writer itself (image sequences)",
    ("plugin/video/writer.py", "imwrite"): "the video writer itself (image sequences)",
    ("plugin/disclosure/stills.py", "imencode"): "the still writer itself: it encodes only StampedFrame pixels",
    ("plugin/queue/segments.py", "av.open(w)"): "joins already stamped segments by packet copy: no frame is "
                                                "encoded, and the joined file's tags are read back",
    ("plugin/video/encode.py", "CodecContext(w)"): "opens the encoder once to check the settings before any "
                                                   "work; no frame is encoded",
    ("plugin/render/bench.py", "CodecContext(w)"): "the bench's transcode reference: packets are counted and "
                                                   "dropped, nothing is written (the measure an effect is held to)",
    ("plugin/disclosure/detect_label.py", "imwrite"): "a crop of a frame under test, handed to tesseract in a "
                                                      "temporary folder removed right after",
    ("models/faceset.py", "imencode"): "face-set crops are the user's own source faces (training data, not "
                                       "synthetic output): a label would be false and would teach the model it",
}


def _encoder_calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = ast.unparse(f.value) if isinstance(f, ast.Attribute) else ""
        if name in ("imwrite", "imencode", "imsave", "mimwrite", "VideoWriter") and owner != "self":
            yield name if name != "VideoWriter" or owner == "cv2" else None, node.lineno
        elif name == "save" and owner not in ("torch",):
            yield "save", node.lineno  # PIL Image.save, imageio, numpy: a picture written without the stamp
        elif name == "create" and owner.endswith("CodecContext"):
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and mode.value.startswith("w"):
                yield "CodecContext(w)", node.lineno
        elif name == "open" and owner == "av":
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and mode.value.startswith("w"):
                yield "av.open(w)", node.lineno


def test_no_encoder_outside_the_writers():
    found, used = [], set()
    for folder in ROOTS:
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            for kind, line in _encoder_calls(path):
                if kind is None:
                    continue
                if (rel, kind) in ALLOWED:
                    used.add((rel, kind))
                else:
                    found.append(f"{rel}:{line}: {kind}")
    assert not found, ("frames or pictures encoded outside the writers (stamp them and use VideoWriter or "
                       "facecomp.disclosure.stills):\n" + "\n".join(found))
    assert ("plugin/video/writer.py", "av.open(w)") in used, "the scan finds the writer's own encoder"


def test_the_encoder_scan_sees_each_kind(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import cv2, av\nfrom PIL import Image\n"
                   "cv2.imwrite('a.png', x)\nok, b = cv2.imencode('.png', x)\nImage.fromarray(x).save('a.png')\n"
                   "av.open('o.mp4', 'w')\nav.open('o.mp4', mode='w')\nav.open('i.mp4')\ncv2.VideoWriter('o.avi', 0, 25, (2, 2))\n"
                   "av.CodecContext.create('libx264', 'w')\nav.CodecContext.create('h264', 'r')\n")
    assert [k for k, _ in _encoder_calls(src)] == ["imwrite", "imencode", "save", "av.open(w)", "av.open(w)",
                                                  "VideoWriter", "CodecContext(w)"]


# ------------------------------------------------------------------------------------------------ stamped frames

@pytest.fixture(scope="module")
def stamped():
    return Stamper(watermark_id="structure").stamp(pattern(120, 160, 0), index=0)


def test_stamped_pixels_are_read_only_down_to_their_memory(stamped):
    px = stamped.pixels
    assert not px.flags.writeable
    with pytest.raises(ValueError):
        px[0, 0, 0] = 1
    with pytest.raises(ValueError):
        px.flags.writeable = True
    base = px
    while isinstance(base, np.ndarray):
        assert not base.flags.writeable
        base = base.base
    with pytest.raises(AttributeError):
        stamped.pixels = pattern(120, 160, 1)
    with pytest.raises(AttributeError):
        object.__setattr__(stamped, "pixels", pattern(120, 160, 1))  # a read-only property, no field


def test_stamped_pixels_from_a_view_of_foreign_memory_are_copied():
    buf = bytearray(120 * 160 * 3)
    frame = np.frombuffer(buf, np.uint8).reshape(120, 160, 3)
    out = Stamper(watermark_id="structure").stamp(frame.copy(), owned=True)
    base = out.pixels
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    assert isinstance(base, np.ndarray) and not base.flags.writeable


def test_a_stamped_frame_cannot_be_re_made_around_other_pixels(stamped):
    other = pattern(120, 160, 5)
    with pytest.raises(TypeError):
        StampedFrame(other, 0, 0.0, ())
    with pytest.raises(TypeError):
        StampedFrame(other, 0, 0.0, (), object())  # the old private token argument
    with pytest.raises(TypeError):
        StampedFrame(pixels=other, index=0, time=0.0, replaced_tracks=(), token=None)
    with pytest.raises(TypeError):
        dataclasses.replace(stamped, pixels=other)
    with pytest.raises(TypeError):
        stamped.__replace__(pixels=other)
    with pytest.raises(TypeError):
        pickle.dumps(stamped)
    assert copy.copy(stamped) is stamped and copy.deepcopy(stamped) is stamped
    with pytest.raises(TypeError):
        type("Forged", (StampedFrame,), {})
    assert not hasattr(StampedFrame, "_issue") and not hasattr(stamped, "__dict__")


def test_a_stamper_cannot_lose_its_marks_or_label():
    s = Stamper(watermark_id="structure")
    frame = pattern(120, 160, 0)
    with pytest.raises(AttributeError):
        s.marks = ()
    with pytest.raises(AttributeError):
        s._marks = ()
    with pytest.raises(AttributeError):
        del s._marks
    for forged in ((), (object(),), s.marks + s.marks):
        t = Stamper(watermark_id="structure")
        object.__setattr__(t, "_marks", forged)  # past the guard: refused when stamping
        with pytest.raises(DisclosureError):
            t.stamp(frame)
    t = Stamper(watermark_id="structure")
    object.__setattr__(t, "_label", None)
    with pytest.raises(DisclosureError):
        t.stamp(frame)
    from facecomp.disclosure.watermark import Watermarker, WatermarkPayload

    t = Stamper(watermark_id="structure")
    object.__setattr__(t, "_marks", (Watermarker(WatermarkPayload(manifest_id=1)),))  # another id
    with pytest.raises(DisclosureError):
        t.stamp(frame)
    with pytest.raises(DisclosureError):
        Stamper(watermark_id="x", _label=object())


# ------------------------------------------------------------------------------------------------ finalize

def test_a_finalize_hook_that_drops_the_tags_is_caught_before_the_rename(tmp_path):
    from facecomp.effect import Engine
    from facecomp.render.clip import render_clip

    src = write_clip(tmp_path / "in.mp4", n=6)
    calls = []

    def untag(tmp: Path, input_path: str, partial: dict) -> dict:
        # rewrite the verified media with a clip that carries no disclosure tags
        write_clip(tmp_path / "plain.mp4", n=6)
        (tmp_path / "plain.mp4").replace(tmp)
        calls.append(tmp)
        return {}

    out = tmp_path / "out.mp4"
    with pytest.raises(MetadataError):
        render_clip(src, out, Engine(), finalize=untag)
    assert calls and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"], "nothing is left behind"


def test_a_finalize_hook_that_keeps_the_file_intact_passes(tmp_path):
    from facecomp.effect import Engine
    from facecomp.render.clip import render_clip

    src = write_clip(tmp_path / "in.mp4", n=6)
    res = render_clip(src, tmp_path / "out.mp4", Engine(), finalize=lambda tmp, i, p: {"checked": True})
    assert res.output.exists() and res.manifest["disclosure"]["checked"] is True


# ------------------------------------------------------------------------------------------------ pictures

def test_pictures_carry_the_label_on_a_band(tmp_path):
    from facecomp.disclosure.stills import encode_png, labelled, write_png
    from facecomp.disclosure.watermark import decode_frame, manifest_id_for

    small = pattern(96, 96, 0)
    out = labelled(small, watermark_id="sheet")
    px = out.pixels
    band = px.shape[0] - 96
    assert band > 0 and px.shape[1] >= 320
    assert np.abs(px[band:, :96].astype(int) - small).mean() < 3, "the picture is below the band, untouched"
    assert px[:band].max() > 200 and np.median(px[:band]) < 40, "white label text on the dark band"
    with pytest.raises(TypeError):
        encode_png(small)
    path = write_png(tmp_path / "p.png", pattern(240, 480, 1), watermark_id="preview")
    import cv2

    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    dec = decode_frame(back)
    assert dec.found and dec.payload is not None and dec.payload.manifest_id == manifest_id_for("preview")
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


# ------------------------------------------------------------------------------------------------ geometry

def test_one_alignment_geometry_both_conventions_give_the_same_crop(shared_media):
    """The swappers (OpenCV pixel centres) and face-set extraction (continuous coordinates) align a face
    with the same fit and template: their crops of the same face are the same pixels."""
    import cv2
    from facecomp.faces import align as falign
    from facecomp.faces.analyzer import analyze_image
    from facecomp.swap import geometry as sgeo

    rgb = cv2.cvtColor(cv2.imread(str(shared_media / "grace_hopper.jpg")), cv2.COLOR_BGR2RGB)
    lm = analyze_image(rgb, require=True)[0].landmarks
    for name, size, tmpl in (("face", 256, sgeo.whole_face_template(256)), ("arcface128", 128, sgeo.arcface_template(128))):
        ours, m = falign.align(rgb, falign.five_points_from_mesh(lm), name, size)
        m_cv = sgeo.similarity(sgeo.five_points(sgeo.to_cv(lm)), tmpl)
        theirs = cv2.warpAffine(rgb, m_cv, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        assert np.abs(ours.astype(int) - theirs).max() <= 1, name
        # and the landmarks land on the same template points either way (up to the half-pixel shift)
        assert np.allclose(sgeo.apply(m_cv, sgeo.to_cv(lm)[:468]) + 0.5, falign.to_template(lm[:468], m), atol=1e-3)
    from facecomp.faces import geometry as fgeo

    assert sgeo.ARCFACE_112 is falign.ARCFACE_112 and sgeo.invert is fgeo.invert
