"""The OpenFX bridge, end to end: the bundle built with the machine's compiler, loaded by a C test host
(tests/ofx_host/host.c, dlopen) that drives load -> describe -> describeInContext -> createInstance ->
parameters -> render against a real ``facecomp serve`` process.

What is checked: the bridge's output equals the engine's own output for the same frame (byte, short,
float; RGBA straight/premultiplied/opaque, RGB), the face changed and the label reads back by OCR; 8
frames from 4 threads; tiles assemble to the whole frame; a server killed mid-render gives the source
with the banner and an error message, and the next frame starts a new server; a hostile host gets the
right status codes and no crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facecomp.ofx_bridge.build import BINARY_NAME, BUNDLE_NAME, arch_folder, build_bundle, install_bundle
from facecomp.spec import ofx_descriptors

ROOT = Path(__file__).resolve().parents[1]
HOST_SRC = ROOT / "tests" / "ofx_host" / "host.c"
MEDIA = Path(os.environ.get("FACECOMP_SAMPLE_MEDIA", ROOT.parent / "shared" / "media"))
BANNER = "facecomp: render server unavailable - see log"
DTYPES = {"byte": np.uint8, "short": np.uint16, "float": np.float32}
OFX_OK, OFX_FAILED, OFX_BAD_HANDLE, OFX_MISSING = 0, 1, 9, 4
OFX_VALUE, OFX_DEFAULT, OFX_IMAGE_FORMAT = 11, 14, 1000

needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                              reason="no C compiler on this machine")
pytestmark = needs_cc


def media(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        pytest.skip(f"sample media {name} not found under {MEDIA}")
    return path


def facecomp_exe() -> str:
    exe = Path(sys.executable).with_name("facecomp")
    if not exe.is_file():
        pytest.skip("the facecomp console script is not installed beside this Python")
    return str(exe)


# ---- building --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ofx")


@pytest.fixture(scope="module")
def host(work) -> Path:
    out = work / "ofx_host"
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "-std=c11", "-O1", "-g", "-Wall", "-Werror", "-Wno-unused-parameter", "-o", str(out),
                    str(HOST_SRC), str(ROOT / "ofx_bridge" / "fc_json.c"), "-ldl", "-lpthread"], check=True)
    return out


@pytest.fixture(scope="module")
def bundle(work):
    return build_bundle(work / "bundle", extra_flags=("-Werror",))


@pytest.fixture(scope="module")
def dead_bundle(work):
    """A bundle whose recorded facecomp does not exist: with no server running, every render fails."""
    return build_bundle(work / "dead", executable="/nonexistent/facecomp")


# ---- running the host ------------------------------------------------------------------------------

class HostRun:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.rc, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        self.lines = proc.stdout.splitlines()

    def status(self, what: str) -> int:
        for line in self.lines:
            parts = line.split(" ")
            if parts[0] == "STATUS" and parts[1] == what:
                return int(parts[2])
        raise AssertionError(f"no STATUS {what} in:\n{self.stdout}\n{self.stderr}")

    def frames(self) -> dict[int, tuple[int, float]]:
        return {int(p[1]): (int(p[2]), float(p[3])) for p in (l.split(" ") for l in self.lines) if p[0] == "FRAME"}

    def messages(self, kind: str = "") -> list[str]:
        return [l[4:] for l in self.lines if l.startswith("MSG ") and kind in l]

    def checks(self) -> dict[str, int]:
        return {p[1]: int(p[2]) for p in (l.split(" ") for l in self.lines) if p[0] == "CHECK"}


def env_for(sock: Path, **extra) -> dict:
    env = dict(os.environ, FACECOMP_SERVER_SOCKET=str(sock))
    env.pop("FACECOMP_EXECUTABLE", None)
    env.update(extra)
    return env


def run_host(host: Path, binary: Path, args: list[str], env: dict, timeout: float = 240) -> HostRun:
    proc = subprocess.run([str(host), "--plugin", str(binary), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    run = HostRun(proc)
    assert proc.returncode == 0, f"host exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return run


def to_depth(rgba8: np.ndarray, depth: str) -> np.ndarray:
    if depth == "byte":
        return rgba8.copy()
    if depth == "short":
        return rgba8.astype(np.uint16) * 257
    return (rgba8.astype(np.float32) / 255.0).astype(np.float32)


def as_u8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.uint16:
        return (frame.astype(np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
    return (frame.astype(np.float64) * 255.0).round().clip(0, 255).astype(np.uint8)


def write_frames(folder: Path, frames: list[np.ndarray]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        np.ascontiguousarray(f).tofile(folder / f"in_{i}.raw")
    return str(folder / "in_%d.raw")


def read_frames(folder: Path, n: int, like: np.ndarray) -> list[np.ndarray]:
    return [np.fromfile(folder / f"out_{i}.raw", dtype=like.dtype).reshape(like.shape) for i in range(n)]


def frame_args(folder: Path, frames: list[np.ndarray], depth: str) -> list[str]:
    h, w, c = frames[0].shape
    return ["--in", write_frames(folder, frames), "--out", str(folder / "out_%d.raw"), "--width", str(w),
            "--height", str(h), "--comps", str(c), "--depth", depth, "--frames", str(len(frames))]


def ocr(image_u8: np.ndarray, tmp: Path) -> str | None:
    """Tesseract's reading of an RGB(A) crop, upscaled; None when tesseract is not installed."""
    if shutil.which("tesseract") is None:
        return None
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image_u8[..., :3]).astype(np.uint8)).convert("L")
    if np.asarray(img).mean() < 128:  # light text on a dark box: dark on light reads best
        from PIL import ImageOps

        img = ImageOps.invert(img)
    img = img.resize((img.width * 3, img.height * 3), Image.LANCZOS)
    path = tmp / f"ocr_{time.monotonic_ns()}.png"
    img.save(path)
    out = subprocess.run(["tesseract", str(path), "stdout", "--psm", "6"], capture_output=True, text=True)
    return out.stdout


def portrait(size: int = 320) -> np.ndarray:
    from PIL import Image

    img = Image.open(media("skimage_astronaut_eileen_collins.png")).convert("RGBA").resize((size, size), Image.LANCZOS)
    return np.asarray(img).copy()


def clip_frames(n: int) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(media("grid_swiz3n.mpg"))) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return out


# ---- servers ---------------------------------------------------------------------------------------

def wait_socket(sock: Path, timeout: float = 90) -> None:
    import socket as pysocket

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        s = pysocket.socket(pysocket.AF_UNIX)
        try:
            s.connect(str(sock))
            return
        except OSError:
            time.sleep(0.1)
        finally:
            s.close()
    raise AssertionError(f"no server on {sock} after {timeout} s")


def start_server(sock: Path) -> subprocess.Popen:
    sock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = open(sock.with_suffix(".test.log"), "ab")
    proc = subprocess.Popen([facecomp_exe(), "serve", "--idle-timeout", "300"], env=env_for(sock), stdout=log,
                            stderr=subprocess.STDOUT)
    log.close()
    wait_socket(sock)
    return proc


def server_status(sock: Path) -> dict | None:
    out = subprocess.run([facecomp_exe(), "serve", "--status", "--json"], env=env_for(sock), capture_output=True,
                         text=True, timeout=60)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


def stop_server(sock: Path, proc: subprocess.Popen | None = None) -> None:
    subprocess.run([facecomp_exe(), "serve", "--stop"], env=env_for(sock), capture_output=True, timeout=60)
    if proc is not None:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(work):
    sock = work / "srv" / "serve.sock"
    proc = start_server(sock)
    yield sock
    stop_server(sock, proc)


@contextlib.contextmanager
def engine_session(settings: dict, clip_id: str, clip: str | None = None):
    """A clip session of the engine in this process (what the bridge must reproduce exactly), as a
    ``render(frame, index, alpha, time=index / 25)`` that gives the whole frame's pixels."""
    from facecomp.effect import Engine
    from facecomp.server.engines import clip_fps
    from facecomp.settings import EffectSettings

    engine = Engine.from_settings(EffectSettings.from_dict(settings), fps=clip_fps(clip) if clip else None)
    session = engine.open_clip(clip, clip_id)

    def render(frame: np.ndarray, index: int, alpha: str, time: float | None = None) -> np.ndarray:
        h, w = frame.shape[:2]
        return np.array(session.render(frame.copy(), index, index / 25.0 if time is None else time,
                                       full_size=(h, w), window=(0, 0, w, h), alpha=alpha).pixels)
    try:
        yield render
    finally:
        session.close()


def engine_render(settings: dict, frame: np.ndarray, clip_id: str, index: int, alpha: str) -> np.ndarray:
    """The same frame through the engine in this process, alone in its session."""
    with engine_session(settings, clip_id) as render:
        return render(frame, index, alpha, time=float(index))


def assert_frame_1_replaced_by_a_new_server(folder: Path, frames, sock: Path, old_pid: int) -> None:
    """Frame 1 came back replaced (no banner, the face changed), from a server other than ``old_pid``."""
    outs = read_frames(folder, 2, frames[0])
    assert banner_rows(outs[1]) == 0
    assert (np.abs(outs[1].astype(int) - frames[1].astype(int)).max(axis=2) > 12).sum() > 300
    status = server_status(sock)
    assert status and status.get("pid") not in (None, old_pid)


def clip_id_of(run: HostRun) -> str:
    for m in run.messages("clip id "):
        return m.rsplit("clip id ", 1)[1].strip()
    raise AssertionError(f"the plugin did not note its clip id:\n{run.stdout}")


# ---- tests -----------------------------------------------------------------------------------------

def test_describe_matches_the_effect_declaration(host, bundle):
    run = run_host(host, bundle.binary, ["--describe"], env_for(Path("/nonexistent/sock")))
    assert (run.status("load"), run.status("describe"), run.status("describe_in_context")) == (0, 0, 0)
    assert "PLUGIN OfxImageEffectPluginAPI 1 org.facecomp.FaceReplace 1.0" in run.lines
    assert "PLUGIN1 null" in run.lines  # one plugin in the binary
    effect = {l.split(" ", 2)[1]: l.split(" ", 2)[2] for l in run.lines if l.startswith("EFFECTPROP ")}
    assert effect["OfxPropLabel"] == "Face Replace (disclosed)"
    assert effect["OfxImageEffectPluginPropGrouping"] == "facecomp"
    assert effect["OfxImageEffectPropSupportedContexts"].split() == ["OfxImageEffectContextFilter",
                                                                     "OfxImageEffectContextGeneral"]
    assert effect["OfxImageEffectPropSupportedPixelDepths"].split() == ["OfxBitDepthByte", "OfxBitDepthShort",
                                                                        "OfxBitDepthFloat"]
    assert effect["OfxImageEffectPluginRenderThreadSafety"] == "OfxImageEffectRenderFullySafe"
    assert effect["OfxImageEffectPropSupportsTiles"] == "1"
    clips = [l for l in run.lines if l.startswith("CLIPPROP ")]
    assert "CLIPPROP Source OfxImageEffectPropSupportedComponents OfxImageComponentRGBA OfxImageComponentRGB" in clips
    assert "CLIPPROP Output OfxImageEffectPropSupportedComponents OfxImageComponentRGBA OfxImageComponentRGB" in clips

    params = {p["name"]: p for p in (json.loads(l[6:]) for l in run.lines if l.startswith("PARAM "))}
    declared = ofx_descriptors()
    for d in declared:  # every OFX-facing setting, same name, type, default and range
        p = params[d["name"]]
        kind = {"string": "String", "choice": "Choice", "double": "Double", "integer": "Integer",
                "boolean": "Boolean"}[d["type"]]
        assert p["type"] == f"OfxParamType{kind}", d["name"]
        assert p["OfxPropLabel"] == [d["label"]]
        assert p["OfxParamPropParent"] == [f"group_{d['group']}"]
        if d["type"] == "choice":
            assert p["OfxParamPropChoiceOption"] == d["options"]
            assert p["OfxParamPropDefault"] == [d["default"]]
        if d["type"] == "string":
            mode = {"file": "FilePath", "multi": "MultiLine", "single": "SingleLine"}[d["string_mode"]]
            assert p["OfxParamPropStringMode"] == [f"OfxParamStringIs{mode}"]
            assert p["OfxParamPropDefault"] == [d["default"]]
        if d["type"] in ("double", "integer"):
            assert p["OfxParamPropDefault"][0] == pytest.approx(d["default"])
            if d["min"] is not None:
                assert p["OfxParamPropMin"][0] == pytest.approx(d["min"])
            if d["max"] is not None:
                assert p["OfxParamPropMax"][0] == pytest.approx(d["max"])
    assert params["model"]["OfxParamPropStringMode"] == ["OfxParamStringIsFilePath"]
    # the label can be enlarged, never shrunk, and nothing in the inspector switches it off
    assert params["label_scale"]["OfxParamPropMin"][0] >= 1.0
    assert params["label_opacity"]["OfxParamPropMin"][0] >= 0.85
    assert not [n for n in params if "label" in n and params[n]["type"] == "OfxParamTypeBoolean"]
    # the plugin's own two: the clip file (hosts do not tell plugins) and the timeout
    assert params["clip_file"]["OfxParamPropStringMode"] == ["OfxParamStringIsFilePath"]
    assert params["server_timeout"]["OfxParamPropDefault"] == [60.0]
    # one clip session renders with one set of settings: nothing can be keyframed into a new engine per frame
    assert {n: p.get("OfxParamPropAnimates") for n, p in params.items() if p["type"] != "OfxParamTypeGroup"} == {
        n: [0] for n, p in params.items() if p["type"] != "OfxParamTypeGroup"}


def test_bundle_layout_build_and_install(bundle, work):
    root = bundle.bundle
    assert root.name == BUNDLE_NAME
    assert bundle.binary == root / "Contents" / arch_folder() / BINARY_NAME
    nm = subprocess.run(["nm", "-D", "--defined-only", str(bundle.binary)], capture_output=True, text=True)
    exported = {l.split()[-1] for l in nm.stdout.splitlines() if " T " in l}
    assert exported == {"OfxGetNumberOfPlugins", "OfxGetPlugin"}  # nothing else leaks into the host
    assert "org.facecomp.FaceReplace" in (root / "Contents" / "Info.plist").read_text()
    assert json.loads((root / "Contents" / "Resources" / "parameters.json").read_text()) == ofx_descriptors()
    # install: a whole copy, with the facecomp executable recorded, replacing an older install
    dest = install_bundle(root, work / "plugins", executable="/opt/example/facecomp")
    assert (dest / "Contents" / arch_folder() / BINARY_NAME).read_bytes() == bundle.binary.read_bytes()
    assert (dest / "Contents" / "Resources" / "facecomp_executable").read_text() == "/opt/example/facecomp\n"
    dest = install_bundle(root, work / "plugins")
    assert (dest / "Contents" / "Resources" / "facecomp_executable").read_text().strip() == facecomp_exe()
    assert [p.name for p in (work / "plugins").iterdir()] == [BUNDLE_NAME]  # no temp folders left
    # the CLI builds the same layout
    out = subprocess.run([facecomp_exe(), "ofx", "build", "-o", str(work / "cli")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (work / "cli" / BUNDLE_NAME / "Contents" / arch_folder() / BINARY_NAME).is_file()
    out = subprocess.run([facecomp_exe(), "ofx", "install", "--bundle", str(work / "cli" / BUNDLE_NAME),
                          "--path", str(work / "cli-plugins")], capture_output=True, text=True,
                         env={**os.environ, "OFX_PLUGIN_PATH": ""})
    assert out.returncode == 0, out.stderr
    assert f"installed {work / 'cli-plugins' / BUNDLE_NAME}" in out.stdout
    assert f"OFX_PLUGIN_PATH={work / 'cli-plugins'}" in out.stdout  # says how hosts will find it
    out = subprocess.run([facecomp_exe(), "ofx", "install", "--bundle", str(work / "nothing-here"),
                          "--path", str(work / "cli-plugins")], capture_output=True, text=True)
    assert out.returncode != 0 and "is not a built FaceReplace.ofx.bundle" in out.stderr


@pytest.mark.parametrize("depth,premult,alpha", [("byte", "straight", "straight"),
                                                 ("short", "premultiplied", "premultiplied"),
                                                 ("float", "opaque", "none")])
def test_render_each_depth_equals_the_engine(host, bundle, server, work, depth, premult, alpha):
    photo = str(media("face_recognition_obama.jpg"))
    rgba = portrait(320)
    if premult == "premultiplied":  # a real alpha edge, premultiplied as the host would hand it over
        rgba[:, :24, 3] = 128
        rgba[:, :24, :3] = (rgba[:, :24, :3].astype(np.uint16) * 128 // 255).astype(np.uint8)
    frame = to_depth(rgba, depth)
    folder = work / f"depth_{depth}"
    run = run_host(host, bundle.binary, [*frame_args(folder, [frame], depth), "--premult", premult,
                                         "--param", f"source={photo}", "--param", "server_timeout=120"],
                   env_for(server))
    assert run.status("create_instance") == 0 and run.status("regions_of_interest") == 0
    assert run.frames()[0][0] == OFX_OK
    assert not run.messages("Error"), run.stdout
    assert run.status("is_identity") == OFX_DEFAULT  # never an identity: the label is always stamped
    assert "ROI 0 0 320 320" in run.lines  # tiles ask for the whole source
    out = read_frames(folder, 1, frame)[0]
    # exactly the engine's own output for this frame, settings and clip id
    expected = engine_render({"source": [photo]}, frame, clip_id_of(run), 0, alpha)
    np.testing.assert_array_equal(out, expected)
    # and what that is: the face changed, the label is there and reads back
    src8, out8 = as_u8(frame).astype(int), as_u8(out).astype(int)
    diff = np.abs(src8 - out8)[..., :3].max(axis=2)
    from facecomp.disclosure.stamp import Stamper

    x0, y0, x1, y1 = Stamper().label_box(320, 320)
    outside_label = np.ones_like(diff, dtype=bool)
    outside_label[y0:y1, x0:x1] = False
    changed = (diff > 12) & outside_label
    assert changed.sum() > 300, "the face was not replaced"
    ys, xs = np.nonzero(changed)
    assert 60 < xs.mean() < 260 and 20 < ys.mean() < 200  # on the face, not scattered over the frame
    # pixels away from the face and the label: the source, up to the invisible watermark's faint change
    far = outside_label.copy()
    far[max(ys.min() - 16, 0):ys.max() + 16, max(xs.min() - 16, 0):xs.max() + 16] = False
    assert np.percentile(diff[far], 99) <= 4 and diff[far].mean() < 1.5
    if rgba.shape[2] == 4 and premult == "straight":
        assert (out8[..., 3] == src8[..., 3]).all()  # alpha passes through
    text = ocr(out8[y0:y1, x0:x1], work)
    if text is not None:
        assert "SYNTHETIC" in text.upper(), text


def test_matte_view_instance_gives_the_host_the_replacement_matte(host, bundle, server, work):
    """A second instance with "Matte view" on: the host gets the matte of the same replacement (white
    where replaced, black elsewhere), labelled like every frame, exactly as the engine renders it."""
    photo = str(media("face_recognition_obama.jpg"))
    frame = portrait(320)
    folder = work / "matte_view"
    run = run_host(host, bundle.binary, [*frame_args(folder, [frame], "byte"), "--param", f"source={photo}",
                                         "--param", "matte_view=1", "--param", "server_timeout=120"],
                   env_for(server))
    assert run.frames()[0][0] == OFX_OK and not run.messages("Error"), run.stdout
    out = read_frames(folder, 1, frame)[0]
    np.testing.assert_array_equal(out, engine_render({"source": [photo], "matte_view": True}, frame,
                                                     clip_id_of(run), 0, "straight"))
    picture = engine_render({"source": [photo]}, frame, clip_id_of(run), 0, "straight")
    from facecomp.disclosure.stamp import Stamper

    x0, y0, x1, y1 = Stamper().label_box(320, 320)
    outside = np.ones((320, 320), bool)
    outside[y0:y1, x0:x1] = False
    grey = out[..., :3].astype(int)
    assert (np.ptp(grey, axis=2)[outside] <= 1).all()  # a grey matte (R = G = B, but for rounding)
    white = (grey[..., 0] > 240) & outside
    changed = (np.abs(picture[..., :3].astype(int) - frame[..., :3].astype(int)).max(axis=2) > 12) & outside
    assert white.sum() > 300 and (changed & ~white).sum() < 0.15 * changed.sum()  # white: where the face went
    assert (grey[..., 0][outside & ~changed] < 200).mean() > 0.9
    assert grey[-20:, :20, 0].max() <= 8  # the corner far from the face: black but for the watermark
    assert (out[..., 3] == frame[..., 3]).all()  # the host's alpha passes through
    text = ocr(out[y0:y1, x0:x1, :3].astype(np.uint8), work)
    if text is not None:
        assert "SYNTHETIC" in text.upper(), text


@pytest.mark.parametrize("premult", ["straight", "premultiplied"])
def test_matte_in_alpha_gives_the_host_a_face_layer_with_its_matte(host, bundle, server, work, premult):
    """"Matte in alpha" on an RGBA clip: the host gets the face as a layer, the matte in its alpha
    (premultiplied when the host's images are), exactly as the engine renders it, the label opaque."""
    photo = str(media("face_recognition_obama.jpg"))
    frame = portrait(320)
    folder = work / f"matte_alpha_{premult}"
    run = run_host(host, bundle.binary, [*frame_args(folder, [frame], "byte"), "--premult", premult,
                                         "--param", f"source={photo}", "--param", "matte_alpha=1",
                                         "--param", "server_timeout=120"], env_for(server))
    assert run.frames()[0][0] == OFX_OK and not run.messages("Error"), run.stdout
    out = read_frames(folder, 1, frame)[0]
    np.testing.assert_array_equal(out, engine_render({"source": [photo], "matte_alpha": True}, frame,
                                                     clip_id_of(run), 0, premult))
    from facecomp.disclosure.stamp import Stamper

    x0, y0, x1, y1 = Stamper().label_box(320, 320)
    a = out[..., 3].astype(int)
    picture = engine_render({"source": [photo]}, frame, clip_id_of(run), 0, premult)
    changed = np.abs(picture[..., :3].astype(int) - frame[..., :3].astype(int)).max(axis=2) > 12
    changed[y0:y1, x0:x1] = False
    assert (a[changed] > 128).mean() > 0.9  # the alpha is the matte: where the face changed
    assert a[-20:, :20].max() == 0 and a[y0:y1, x0:x1].min() >= 0.85 * 255  # far: 0; the label: opaque
    if premult == "premultiplied":
        assert (out[..., :3].astype(int) <= a[..., None] + 1).all()  # colour never above alpha


def test_eight_frames_from_four_threads(host, bundle, server, work):
    frames = clip_frames(8)  # RGB frames: the host offers 3 channels here
    photo = str(media("face_recognition_obama.jpg"))
    folder = work / "threads"
    run = run_host(host, bundle.binary, [*frame_args(folder, frames, "byte"), "--threads", "4",
                                         "--param", f"source={photo}", "--param", "server_timeout=180"],
                   env_for(server))
    done = run.frames()
    assert sorted(done) == list(range(8)) and all(st == OFX_OK for st, _ in done.values()), run.stdout
    assert not run.messages("Error")
    outs = read_frames(folder, 8, frames[0])
    from facecomp.disclosure.stamp import Stamper

    h, w = frames[0].shape[:2]
    x0, y0, x1, y1 = Stamper().label_box(h, w)
    for src, out in zip(frames, outs):
        d = np.abs(src.astype(int) - out.astype(int)).max(axis=2)
        assert d[y0:y1, x0:x1].mean() > 40  # labelled
        rest = d.copy()
        rest[y0:y1, x0:x1] = 0
        assert (rest > 12).sum() > 200  # and the face replaced
    text = ocr(outs[5][y0:y1, x0:x1], work)
    if text is not None:
        assert "SYNTHETIC" in text.upper(), text


def test_tiles_assemble_to_the_whole_frame(host, bundle, server, work):
    frame = to_depth(portrait(256), "float")
    photo = str(media("face_recognition_obama.jpg"))
    common = ["--param", f"source={photo}", "--param", "server_timeout=120"]
    whole = run_host(host, bundle.binary, [*frame_args(work / "whole", [frame], "float"), *common], env_for(server))
    # tiles from a host that keeps rows top first (negative row bytes, allowed by the spec)
    tiled = run_host(host, bundle.binary, [*frame_args(work / "tiled", [frame], "float"), "--tiles", "5",
                                           "--top-down", *common], env_for(server))
    assert whole.frames()[0][0] == OFX_OK and tiled.frames()[0][0] == OFX_OK
    a, b = read_frames(work / "whole", 1, frame)[0], read_frames(work / "tiled", 1, frame)[0]
    # the watermark follows the clip id, which differs per instance: compare each with its own engine render
    np.testing.assert_array_equal(b, engine_render({"source": [photo]}, frame, clip_id_of(tiled), 0, "straight"))
    np.testing.assert_array_equal(a, engine_render({"source": [photo]}, frame, clip_id_of(whole), 0, "straight"))
    marker = np.frombuffer(b"\x5a\x5a\x5a\x5a", dtype=np.float32)[0]
    assert not (b == marker).any()  # every pixel of every tile was written


def banner_rows(out8: np.ndarray) -> int:
    """Height of the red band at the top (the plugin's error banner)."""
    rows = 0
    for row in out8:
        red = (row[:, 0] > 120) & (row[:, 1] < 20) & (row[:, 2] < 20)
        white = (row[:, :3] > 235).all(axis=1)
        if (red | white).mean() < 0.97:
            break
        rows += 1
    return rows


def check_banner(src: np.ndarray, out: np.ndarray, work: Path, *, read: bool = True) -> None:
    src8, out8 = as_u8(src), as_u8(out)
    rows = banner_rows(out8)
    assert rows >= 9, "no error banner"
    np.testing.assert_array_equal(out[rows:], src[rows:])  # below it: the source, exactly, unreplaced
    text = ocr(out8[:rows], work) if read else None
    if text is not None:
        assert "server" in text.lower() and "unavailable" in text.lower(), text


def test_no_server_gives_source_banner_and_error(host, dead_bundle, work):
    frame = to_depth(portrait(320), "short")
    sock = work / "none" / "serve.sock"
    run = run_host(host, dead_bundle.binary, [*frame_args(work / "dead_out", [frame], "short"),
                                              "--param", "server_timeout=5"],
                   env_for(sock, PATH="/usr/bin:/bin"))
    assert run.frames()[0][0] == OFX_OK  # the host gets a frame, not an error
    errors = run.messages("OfxMessageError")
    assert errors and "render server unavailable" in errors[0] and "no facecomp executable" in errors[0]
    assert "unreplaced source" in errors[0]
    check_banner(frame, read_frames(work / "dead_out", 1, frame)[0], work)


def test_server_killed_mid_render_recovers_on_the_next_frame(host, bundle, work):
    sock = work / "kill" / "serve.sock"
    first = start_server(sock)
    frames = [to_depth(portrait(320), "byte")] * 3
    photo = str(media("face_recognition_obama.jpg"))
    try:
        run = run_host(host, bundle.binary, [*frame_args(work / "kill_out", frames, "byte"),
                                             "--kill", f"1:5:kill -9 {first.pid}",
                                             "--param", f"source={photo}", "--param", "server_timeout=150"],
                       env_for(sock, FACECOMP_EXECUTABLE=facecomp_exe()))
        first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL
        done = run.frames()
        assert all(done[i][0] == OFX_OK for i in range(3)), run.stdout
        outs = read_frames(work / "kill_out", 3, frames[0])
        errors = run.messages("OfxMessageError")
        assert len(errors) == 1 and "render server unavailable" in errors[0], run.stdout
        assert "server closed the connection" in errors[0] or "timed out" in errors[0]
        check_banner(frames[1], outs[1], work)
        assert banner_rows(outs[0]) == 0 and banner_rows(outs[2]) == 0
        # frames 0 and 2 are replaced and labelled; frame 2 came from a new server the plugin started
        assert "clear" in " ".join(run.messages("clear"))
        for i in (0, 2):
            assert (np.abs(outs[i].astype(int) - frames[i].astype(int)).max(axis=2) > 12).sum() > 300
        status = server_status(sock)
        assert status and status.get("pid") not in (None, first.pid)
        assert "starting" in run.stderr
    finally:
        stop_server(sock)
        if first.poll() is None:
            first.kill()


EXPECTED_HOSTILE = {
    "load_without_host": OFX_MISSING, "load_without_suites": OFX_MISSING,
    "load_with_property_suite_only": OFX_MISSING, "describe_after_failed_load": OFX_MISSING,
    "load_without_optional_suites": OFX_OK, "unknown_action": OFX_DEFAULT, "null_action": OFX_BAD_HANDLE,
    "describe_null_handle": OFX_BAD_HANDLE, "describe": OFX_OK, "describe_unsupported_context": OFX_MISSING,
    "describe_in_context_null_handle": OFX_BAD_HANDLE, "describe_in_context": OFX_OK,
    "render_null_handle": OFX_BAD_HANDLE, "render_on_descriptor": OFX_BAD_HANDLE,
    "create_instance_null_handle": OFX_BAD_HANDLE, "create_instance": OFX_OK, "render_null_args": OFX_BAD_HANDLE,
    "render_without_time": OFX_VALUE, "render_empty_window": OFX_OK, "render_absurd_bounds": OFX_IMAGE_FORMAT,
    "render_null_image_data": OFX_IMAGE_FORMAT, "render_short_row_bytes": OFX_IMAGE_FORMAT,
    "render_half_depth": OFX_IMAGE_FORMAT, "render_mismatched_depths": OFX_IMAGE_FORMAT,
    "render_image_unavailable": OFX_FAILED, "render_without_server": OFX_OK, "is_identity": OFX_DEFAULT,
    "regions_of_interest_null_args": OFX_BAD_HANDLE, "purge_caches": OFX_OK, "destroy_instance": OFX_OK,
    "destroy_instance_twice": OFX_BAD_HANDLE, "render_after_destroy": OFX_BAD_HANDLE, "unload": OFX_OK,
}


def test_hostile_host_gets_status_codes_and_no_crash(host, dead_bundle, work):
    env = env_for(work / "none" / "serve.sock", PATH="/usr/bin:/bin")
    out = work / "hostile_%d.raw"
    cmd = ["--hostile", "--out", str(out), "--param", "server_timeout=2"]
    run = run_host(host, dead_bundle.binary, cmd, env)
    assert run.checks() == EXPECTED_HOSTILE, run.stdout
    # the render without a server still produced a frame: source + banner
    src = np.zeros((48, 64 * 4 + 16), np.uint8)
    src.reshape(-1)[:] = (np.arange(src.size) * 7).astype(np.uint8)
    src = src[::-1, : 64 * 4].reshape(48, 64, 4)
    got = np.fromfile(work / "hostile_0.raw", np.uint8).reshape(48, 64, 4)
    check_banner(src, got, work, read=False)  # 64x48: the smallest text, too small to OCR
    if shutil.which("valgrind"):
        vg = subprocess.run(["valgrind", "-q", "--error-exitcode=99", "--leak-check=no", str(host), "--plugin",
                             str(dead_bundle.binary), *cmd], env=env, capture_output=True, text=True, timeout=300)
        assert vg.returncode == 0, vg.stderr[-4000:]
        assert HostRun(vg).checks() == EXPECTED_HOSTILE


def test_missing_parameter_description_fails_describe_cleanly(host, dead_bundle, work):
    broken = work / "broken"
    shutil.copytree(dead_bundle.bundle, broken / BUNDLE_NAME)
    (broken / BUNDLE_NAME / "Contents" / "Resources" / "parameters.json").unlink()
    binary = broken / BUNDLE_NAME / "Contents" / arch_folder() / BINARY_NAME
    run = HostRun(subprocess.run([str(host), "--plugin", str(binary), "--describe"], capture_output=True, text=True,
                                 env=env_for(work / "none" / "serve.sock")))
    assert run.status("describe") == OFX_OK and run.status("describe_in_context") == OFX_FAILED
    assert any("parameters.json is missing" in m for m in run.messages("OfxMessageError"))


def test_clip_file_opens_a_clip_session(host, bundle, server, work):
    clip = media("grid_swiz3n.mpg")
    frames = clip_frames(4)
    photo = str(media("face_recognition_obama.jpg"))
    folder = work / "clip"
    run = run_host(host, bundle.binary, [*frame_args(folder, frames, "byte"), "--param", f"source={photo}",
                                         "--param", f"clip_file={clip}", "--param", "server_timeout=180"],
                   env_for(server))
    assert all(st == OFX_OK for st, _ in run.frames().values()) and len(run.frames()) == 4
    assert not run.messages("analysed alone") and not run.messages("Error"), run.stdout
    outs = read_frames(folder, 4, frames[0])
    # the same frames through a clip session of the engine here: tracking over the clip's own frames,
    # the clip's stable watermark id, seconds from the host's frame rate
    from facecomp.server.engines import default_clip_id

    real = os.path.realpath(clip)
    with engine_session({"source": [photo]}, default_clip_id(real), real) as render:
        for i, (src, out) in enumerate(zip(frames, outs)):
            np.testing.assert_array_equal(out, render(src, i, "none"))


def test_too_slow_server_times_out_without_hanging(host, bundle, server, work):
    frame = to_depth(portrait(1024), "byte")  # a large frame with settings no other test used: a new engine
    photo = str(media("grace_hopper.jpg"))
    t0 = time.monotonic()
    run = run_host(host, bundle.binary, [*frame_args(work / "slow", [frame], "byte"), "--param", f"source={photo}",
                                         "--param", "server_timeout=0.1"], env_for(server))
    assert time.monotonic() - t0 < 20
    st, ms = run.frames()[0]
    assert st == OFX_OK and ms < 2000, run.stdout
    errors = run.messages("OfxMessageError")
    assert errors and "timed out" in errors[0], run.stdout
    check_banner(frame, read_frames(work / "slow", 1, frame)[0], work, read=False)


def test_refused_settings_give_source_banner_and_the_servers_reason(host, bundle, server, work):
    frame = to_depth(portrait(320), "float")
    run = run_host(host, bundle.binary, [*frame_args(work / "refused", [frame], "float"),
                                         "--param", f"source={work / 'no-such-photo.jpg'}"], env_for(server))
    assert run.frames()[0][0] == OFX_OK
    errors = run.messages("OfxMessageError")
    assert errors and "source" in errors[0] and "Error" in errors[0], run.stdout
    check_banner(frame, read_frames(work / "refused", 1, frame)[0], work, read=False)


def test_a_server_that_dies_while_starting_fails_fast(host, bundle, work):
    frame = to_depth(portrait(128), "byte")
    sock = work / "dies" / "serve.sock"
    t0 = time.monotonic()
    run = run_host(host, bundle.binary, [*frame_args(work / "dies_out", [frame], "byte"),
                                         "--param", "server_timeout=60"],
                   env_for(sock, FACECOMP_EXECUTABLE=shutil.which("false") or "/bin/false"))
    assert time.monotonic() - t0 < 30  # not the 60 s timeout: the plugin saw it exit
    errors = run.messages("OfxMessageError")
    assert errors and "exited while starting" in errors[0], run.stdout
    check_banner(frame, read_frames(work / "dies_out", 1, frame)[0], work, read=False)


@pytest.mark.parametrize("scale,par", [(0.5, 1.0), (1.0, 2.0)])
def test_proxy_scale_and_pixel_aspect_place_the_frame(host, bundle, server, work, scale, par):
    """At a render scale or an anamorphic pixel aspect the region of definition (canonical units) still
    maps onto the image: the bridge's output is the engine's for exactly these pixels as a whole frame."""
    frame = to_depth(portrait(192), "byte")
    photo = str(media("face_recognition_obama.jpg"))
    folder = work / f"scale_{scale}_{par}"
    run = run_host(host, bundle.binary, [*frame_args(folder, [frame], "byte"), "--scale", str(scale), "--par", str(par),
                                         "--param", f"source={photo}", "--param", "server_timeout=120"],
                   env_for(server))
    assert run.frames()[0][0] == OFX_OK and not run.messages("Error"), run.stdout
    out = read_frames(folder, 1, frame)[0]
    np.testing.assert_array_equal(out, engine_render({"source": [photo]}, frame, clip_id_of(run), 0, "straight"))


def test_a_server_gone_between_frames_is_replaced_without_a_failed_frame(host, bundle, work):
    """The server stops between two frames (idle timeout, `serve --stop`, an upgrade): the pooled
    connection is dead, the request never reached anyone, so the plugin repeats it on a new server."""
    sock = work / "gone" / "serve.sock"
    first = start_server(sock)
    frames = [to_depth(portrait(256), "byte")] * 2
    photo = str(media("face_recognition_obama.jpg"))
    # stop it, then wait until this process has reaped it (only then are all its sockets closed)
    reaped = work / "gone" / "reaped"
    import threading

    watcher = threading.Thread(target=lambda: (first.wait(), reaped.touch()), daemon=True)
    watcher.start()
    stop = (f"FACECOMP_SERVER_SOCKET={sock} {facecomp_exe()} serve --stop >/dev/null; "
            f"while [ ! -e {reaped} ]; do sleep 0.05; done")
    try:
        run = run_host(host, bundle.binary, [*frame_args(work / "gone_out", frames, "byte"), "--before", f"1:{stop}",
                                             "--param", f"source={photo}", "--param", "server_timeout=150"],
                       env_for(sock, FACECOMP_EXECUTABLE=facecomp_exe()))
        first.wait(timeout=30)
        assert all(st == OFX_OK for st, _ in run.frames().values()) and len(run.frames()) == 2
        assert not run.messages("OfxMessageError"), run.stdout
        assert "starting" in run.stderr  # the plugin started the second server itself
        assert_frame_1_replaced_by_a_new_server(work / "gone_out", frames, sock, first.pid)
    finally:
        stop_server(sock)
        if first.poll() is None:
            first.kill()


def test_a_v1_message_host_gets_one_error_per_failure_streak(host, dead_bundle, work):
    """Hosts with only message suite V1 may show errors as modal dialogs: the first failing frame is an
    error, the following ones go to the host's log (every frame still reports)."""
    frames = [to_depth(portrait(128), "byte")] * 3
    offer_v1 = 1 | 2 | 4 | 8 | 16 | 64  # property, effect, param, memory, thread, message V1
    run = run_host(host, dead_bundle.binary, [*frame_args(work / "v1", frames, "byte"), "--offer", str(offer_v1),
                                              "--param", "server_timeout=5"],
                   env_for(work / "none" / "serve.sock", PATH="/usr/bin:/bin"))
    assert all(st == OFX_OK for st, _ in run.frames().values()) and len(run.frames()) == 3
    errors = [m for m in run.messages("render server unavailable") if m.startswith("OfxMessageError")]
    logged = [m for m in run.messages("render server unavailable") if m.startswith("OfxMessageLog")]
    assert len(errors) == 1 and len(logged) == 2, run.stdout
    assert not run.messages("persistent:")


def test_tiles_rendered_at_once_from_several_threads_come_from_one_server_result(host, bundle, server, work):
    """A host rendering the tiles of a frame on several threads at once: one thread fetches the frame,
    the others wait and cut their tiles from it, so the server renders each frame once, in order (a
    session's state advances once per frame), and the tiles make one picture."""
    frames = clip_frames(3)
    photo = str(media("face_recognition_obama.jpg"))
    folder = work / "tile_threads"
    before = server_status(server)["frames"]
    run = run_host(host, bundle.binary, [*frame_args(folder, frames, "byte"), "--tiles", "4", "--tile-threads",
                                         "--param", f"source={photo}", "--param", "server_timeout=120"],
                   env_for(server))
    assert sorted(run.frames()) == [0, 1, 2] and all(st == OFX_OK for st, _ in run.frames().values())
    assert server_status(server)["frames"] - before == 3  # 12 tiles, 3 server renders
    outs = read_frames(folder, 3, frames[0])
    with engine_session({"source": [photo]}, clip_id_of(run)) as render:
        for i, (src, out) in enumerate(zip(frames, outs)):
            np.testing.assert_array_equal(out, render(src, i, "none"))


def test_window_outside_the_source_clip_is_transparent_black(host, bundle, dead_bundle, server, work):
    """A source clip smaller than the render window (the host renders its format; the clip covers part
    of it): inside the clip the replaced frame (or, without a server, the source under the banner),
    outside it transparent black, as the specification's guide has a filter write where there is no
    source pixel; never what the host's buffer held (the test host fills it with 0x5A)."""
    frame = to_depth(portrait(256), "byte")
    photo = str(media("face_recognition_obama.jpg"))
    x1, y1, x2, y2 = 16, 8, 240, 232  # top-down rows
    crop = ["--src-crop", f"{x1},{y1},{x2},{y2}"]
    inside = np.zeros(frame.shape[:2], bool)
    inside[y1:y2, x1:x2] = True
    run = run_host(host, bundle.binary, [*frame_args(work / "crop", [frame], "byte"), *crop,
                                         "--param", f"source={photo}", "--param", "server_timeout=120"],
                   env_for(server))
    assert run.frames()[0][0] == OFX_OK and not run.messages("Error"), run.stdout
    out = read_frames(work / "crop", 1, frame)[0]
    assert (out[~inside] == 0).all()
    want = engine_render({"source": [photo]}, np.ascontiguousarray(frame[y1:y2, x1:x2]), clip_id_of(run), 0,
                         "straight")
    np.testing.assert_array_equal(out[y1:y2, x1:x2], want)
    # the failure path too: the source under the banner inside the clip, zeros outside
    dead = run_host(host, dead_bundle.binary, [*frame_args(work / "crop_dead", [frame], "byte"), *crop,
                                               "--param", "server_timeout=5"],
                    env_for(work / "none" / "serve.sock", PATH="/usr/bin:/bin"))
    assert dead.frames()[0][0] == OFX_OK and dead.messages("OfxMessageError"), dead.stdout
    out = read_frames(work / "crop_dead", 1, frame)[0]
    assert (out[~inside] == 0).all()
    check_banner(frame[y1:y2, x1:x2], out[y1:y2, x1:x2], work, read=False)


def test_tiles_of_a_frame_whose_source_changed_are_not_cut_from_the_old_result(host, bundle, server, work):
    """An upstream change at the same time (same frame, same parameters, other source pixels: a paint
    fix, a new grade) renders the frame again, tile by tile: the tile cache is keyed on the source's
    pixels, so the tiles come from the server's render of the new pixels, not the stale kept result."""
    first = to_depth(portrait(256), "byte")
    changed = np.ascontiguousarray(first[:, ::-1])  # the same face, mirrored: other pixels
    photo = str(media("face_recognition_obama.jpg"))
    folder = work / "rerender"
    before = server_status(server)["frames"]
    run = run_host(host, bundle.binary, [*frame_args(folder, [first, changed], "byte"), "--tiles", "4",
                                         "--rerender", "0:1", "--param", f"source={photo}",
                                         "--param", "server_timeout=120"], env_for(server))
    assert all(st == OFX_OK for st, _ in run.frames().values()) and len(run.frames()) == 2, run.stdout
    assert [l.split()[2] for l in run.lines if l.startswith("RERENDER ")] == ["0"], run.stdout
    assert not run.messages("Error"), run.stdout
    assert server_status(server)["frames"] - before == 3  # frame 0, frame 1, frame 0 again (4 tiles each)
    outs = read_frames(folder, 2, first)
    with engine_session({"source": [photo]}, clip_id_of(run)) as render:
        stale = render(first, 0, "straight")
        np.testing.assert_array_equal(outs[1], render(changed, 1, "straight"))
        again = render(changed, 0, "straight")
        assert np.abs(again.astype(int) - stale.astype(int)).max() > 40
        np.testing.assert_array_equal(outs[0], again)  # the new pixels' frame, labelled


def test_a_parameter_change_closes_the_old_server_session(host, bundle, server, work):
    """The user changes a setting between two frames: the plugin opens a session for the new settings
    and closes the old one on the server (each `open` needs its `close`); left open it would hold the
    server's memory until its least-recently-used eviction. After the instance goes, the server has
    exactly the sessions it had before."""
    frames = [to_depth(portrait(160), "byte")] * 3
    photo = str(media("face_recognition_obama.jpg"))
    before = server_status(server)
    during = work / "param_change_status.json"  # the server's count before frame 2, the instance still open
    status = f"FACECOMP_SERVER_SOCKET={server} {facecomp_exe()} serve --status --json > {during}"
    run = run_host(host, bundle.binary, [*frame_args(work / "param_change", frames, "byte"),
                                         "--param-at", "1:label_scale=1.5", "--before", f"2:{status}",
                                         "--param", f"source={photo}", "--param", "server_timeout=120"],
                   env_for(server))
    assert all(st == OFX_OK for st, _ in run.frames().values()) and len(run.frames()) == 3, run.stdout
    assert "PARAMSET 1 label_scale=1.5" in run.lines and not run.messages("Error"), run.stdout
    outs = read_frames(work / "param_change", 3, frames[0])
    from facecomp.disclosure.stamp import Stamper
    from facecomp.settings import EffectSettings

    small = Stamper().label_box(160, 160)
    big = Stamper(EffectSettings.from_dict({"label_scale": 1.5}).label).label_box(160, 160)
    assert big[2] > small[2] + 10
    for i, out in enumerate(outs):  # frame 0 with the label as it was, frames 1 and 2 with the larger one
        d = np.abs(out.astype(int) - frames[i].astype(int)).max(axis=2)
        x0, y0, x1, y1 = big if i else small
        assert d[y0:y1, x0:x1].mean() > 40
        strip = d[y0 + 4:y1 - 4, small[2] + 2:big[2] - 2]  # inside the large label only
        assert (strip.mean() > 40) == bool(i), (i, strip.mean())
    after = server_status(server)
    assert after["evicted"] == before["evicted"]  # nothing closed under the cap meanwhile
    # while the instance lives: its one current session (the old one was closed at the change) ...
    assert json.loads(during.read_text())["sessions"] == before["sessions"] + 1
    assert after["sessions"] == before["sessions"], (before, after)  # ... and none once it is gone


def test_a_passed_deadline_fails_that_frame_clearly_and_keeps_the_connection(host, bundle, server, work):
    """A frame whose server timeout has passed before its request could go (a tiny timeout here; in a
    host, time spent waiting for another render thread's fetch of the frame) fails with the banner and
    a message that says it timed out, not "unknown error"; the pooled connection and the session stay,
    so the next frame is replaced on them (no second `open` that would never be closed)."""
    frames = [to_depth(portrait(160), "byte")] * 4
    photo = str(media("face_recognition_obama.jpg"))
    tiny, normal = "server_timeout=0.000001", "server_timeout=120"
    before = server_status(server)
    run = run_host(host, bundle.binary, [*frame_args(work / "deadline", frames, "byte"), "--param", tiny,
                                         "--param-at", f"1:{normal}", "--param-at", f"2:{tiny}",
                                         "--param-at", f"3:{normal}", "--param", f"source={photo}"],
                   env_for(server))
    assert all(st == OFX_OK for st, _ in run.frames().values()) and len(run.frames()) == 4, run.stdout
    errors = run.messages("OfxMessageError")
    assert len(errors) == 2, run.stdout  # frames 0 and 2
    for e in errors:
        assert "timed out" in e and "1e-06 s server timeout" in e and "unknown error" not in e, e
    outs = read_frames(work / "deadline", 4, frames[0])
    for i in (0, 2):
        check_banner(frames[i], outs[i], work, read=False)
    for i in (1, 3):
        assert banner_rows(outs[i]) == 0
        assert (np.abs(outs[i].astype(int) - frames[i].astype(int)).max(axis=2) > 12).sum() > 300
    after = server_status(server)
    assert after["evicted"] == before["evicted"]
    assert after["sessions"] == before["sessions"], (before, after)  # the one open was closed at destroy


STOP_WHILE_BUSY = r'''
import os, sys, threading, time
import numpy as np
from facecomp.server.client import connect

sock, photo, frame = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
busy = connect(start=False, socket_path=sock, request_timeout=300)
sid = busy.open_clip(None, {"source": [photo]}, "ofx-test-busy")
threading.Thread(target=lambda: busy.render(sid, frame, 0, 0.0), daemon=True).start()
# once that render is in flight the server, told to stop, waits for it before it goes (a fixed sleep
# here raced the render's request on a loaded machine: the server then stopped at once)
other = connect(start=False, socket_path=sock)
deadline = time.monotonic() + 60
while other.stats()["in_flight"] < 1:
    if time.monotonic() > deadline:
        sys.exit("the busy render never began")
    time.sleep(0.01)
other.shutdown()
print("stopping while busy", flush=True)
os._exit(0)
'''


def test_a_stopping_server_sends_the_frame_to_a_new_server(host, bundle, work):
    """The server is stopping (told to, with a render of another client still in flight, so it lingers)
    when the plugin sends a frame on its pooled connection: it answers ServerStoppingError (the request
    did not run). The plugin sends the frame to a new server it starts once the old one has gone: no
    failed frame, no banner."""
    sock = work / "stopping" / "serve.sock"
    first = start_server(sock)
    frames = [to_depth(portrait(256), "byte")] * 2
    photo = str(media("face_recognition_obama.jpg"))
    big = work / "stopping" / "big.npy"
    from PIL import Image

    np.save(big, np.asarray(Image.fromarray(portrait(320)).resize((1600, 1600))))
    script = work / "stopping" / "stop_while_busy.py"
    script.write_text(STOP_WHILE_BUSY)
    stop = f"{sys.executable} {script} {sock} {photo} {big}"
    try:
        run = run_host(host, bundle.binary, [*frame_args(work / "stopping_out", frames, "byte"),
                                             "--before", f"1:{stop}", "--param", f"source={photo}",
                                             "--param", "server_timeout=150"],
                       env_for(sock, FACECOMP_EXECUTABLE=facecomp_exe()))
        first.wait(timeout=60)
        assert "stopping while busy" in run.lines, run.stdout + run.stderr
        assert all(st == OFX_OK for st, _ in run.frames().values()) and len(run.frames()) == 2
        assert not run.messages("OfxMessageError"), run.stdout
        assert "the server was stopping (ServerStoppingError" in run.stderr, run.stderr
        assert_frame_1_replaced_by_a_new_server(work / "stopping_out", frames, sock, first.pid)
    finally:
        stop_server(sock)
        if first.poll() is None:
            first.kill()
