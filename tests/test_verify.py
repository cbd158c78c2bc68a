"""``facecomp verify``: every layer of a real ``facecomp render`` output, and each tamper case reported."""

from __future__ import annotations

import json
import shutil

import av
import pytest

pytest.importorskip("c2pa", reason="the provenance extra (c2pa-python) is not installed")

from facecomp.cli import main  # noqa: E402
from facecomp.disclosure import c2pa_sign as cs  # noqa: E402
from facecomp.disclosure.label import Label, LabelSettings  # noqa: E402
from facecomp.disclosure.manifest import load_manifest, sidecar_path  # noqa: E402
from facecomp.disclosure.verify import ABSENT, INVALID, MISSING, OK, inspect_file  # noqa: E402
from facecomp.disclosure.watermark import manifest_id_for  # noqa: E402
from facecomp.errors import MediaError  # noqa: E402

from conftest import shared_media_dir  # noqa: E402
from mediagen import decode_all, write_clip  # noqa: E402

FAST = dict(label_frames=2, watermark_frames=20)


def _render(src, out, env: dict[str, str]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        for k in (cs.ENV_CERT, cs.ENV_KEY, cs.ENV_CONFIG):
            mp.delenv(k, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        assert main(["render", str(src), "-o", str(out), "--end", "20", "--quiet"]) == 0


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A signed render of a real face clip (a generated clip where the sample media is absent)."""
    d = tmp_path_factory.mktemp("verify")
    chain = cs.make_dev_chain(d / "certs")
    media = shared_media_dir()
    src = media / "grid_bbaf2n.mpg" if media else write_clip(d / "in.mp4", w=320, h=240, n=20)
    out = d / "signed.mp4"
    _render(src, out, {cs.ENV_CONFIG: str(chain.config)})
    return out, chain


def copy_with_sidecar(out, dest):
    shutil.copy(out, dest)
    shutil.copy(sidecar_path(out), sidecar_path(dest))
    return dest


def stream_copy(src, dest):
    """A remux by PyAV stream copy: same pixels, container rebuilt (no tags, no C2PA)."""
    with av.open(str(src)) as i, av.open(str(dest), "w") as o:
        ost = o.add_stream_from_template(i.streams.video[0])
        for pkt in i.demux(i.streams.video[0]):
            if pkt.dts is None:
                continue
            pkt.stream = ost
            o.mux(pkt)
    return dest


def test_every_layer_round_trips(rendered, capsys):
    out, chain = rendered
    rep = inspect_file(out, chain.root_cert, label_frames=3)
    assert rep.ok, rep.format_text()
    assert {r.layer: r.status for r in rep.layers} == dict.fromkeys(
        ("label", "tags", "manifest", "c2pa", "watermark"), OK)
    manifest = load_manifest(out)
    assert rep.layer("c2pa").details["trusted"] is True
    assert rep.layer("label").details["frames_with_label"] == 3
    wmk = rep.layer("watermark").details
    assert wmk["synthetic"] and wmk["manifest_id"] == f"{manifest_id_for(manifest['id']):08x}"
    assert rep.layer("manifest").details["recorded_sha256"] == rep.layer("manifest").details["file_sha256"]
    assert manifest["disclosure"]["c2pa"]["signed"] is True
    # the CLI: exit 0, JSON that says the same
    assert main(["verify", str(out), "--json", "--trust", str(chain.root_cert), "--frames", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["layers"]["c2pa"]["details"]["trusted"] is True
    assert main(["verify", str(out), "--frames", "1"]) == 0
    text = capsys.readouterr().out
    assert "valid (trust not checked" in text and "every expected layer" in text


def test_flipped_media_byte_breaks_c2pa_and_hash(rendered, tmp_path):
    out, chain = rendered
    bad = copy_with_sidecar(out, tmp_path / "bad.mp4")
    data = bytearray(bad.read_bytes())
    data[data.find(b"mdat") + 1000] ^= 0x01
    bad.write_bytes(bytes(data))
    rep = inspect_file(bad, chain.root_cert, layers=("manifest", "c2pa"), **FAST)
    assert rep.layer("c2pa").status == INVALID and "mismatch" in rep.layer("c2pa").summary
    assert rep.layer("manifest").status == INVALID and "hash mismatch" in rep.layer("manifest").summary
    assert not rep.ok and rep.exit_code != 0


def test_remux_loses_manifest_but_not_the_watermark(rendered, tmp_path):
    out, _ = rendered
    remux = stream_copy(out, tmp_path / "remux.mp4")
    rep = inspect_file(remux, layers=("tags", "manifest", "c2pa", "watermark"), **FAST)
    assert rep.layer("manifest").status == MISSING
    assert rep.layer("tags").status == MISSING
    assert rep.layer("c2pa").status == ABSENT and rep.layer("c2pa").details["present"] is False
    w = rep.layer("watermark")
    assert w.status == OK and w.details["synthetic"] is True
    assert w.details["manifest_id"] == f"{manifest_id_for(load_manifest(out)['id']):08x}"
    assert main(["verify", str(remux), "--frames", "1", "--watermark-frames", "10"]) != 0
    # the remux with the original sidecar beside it: the manifest says "signed", so C2PA is missing
    shutil.copy(sidecar_path(out), sidecar_path(remux))
    rep = inspect_file(remux, layers=("manifest", "c2pa"), **FAST)
    assert rep.layer("c2pa").status == MISSING and rep.layer("manifest").status == INVALID


def test_cropped_label_region_is_reported(rendered, tmp_path):
    out, _ = rendered
    frames = decode_all(out)
    h, w = frames[0].shape[:2]
    x0, y0, x1, y1 = Label(LabelSettings()).layout(h, w).box
    top = y1 + 2 if y1 < h // 4 else 0
    left = x1 + 2 if top == 0 else 0
    cropped = [f[top:, left:] for f in frames]
    ch, cw = cropped[0].shape[:2]
    ch, cw = ch - ch % 2, cw - cw % 2
    path = tmp_path / "cropped.mp4"
    write_clip(path, w=cw, h=ch, n=len(cropped), frames=[f[:ch, :cw].copy() for f in cropped],
               options={"crf": "18"})
    rep = inspect_file(path, layers=("label", "watermark"), label_frames=2, watermark_frames=60)
    assert rep.layer("label").status == MISSING and rep.layer("label").details["frames_with_label"] == 0
    assert rep.layer("watermark").status == OK      # the crop search still finds the watermark
    assert rep.exit_code != 0


def test_sidecar_from_another_file_is_a_hash_mismatch(rendered, tmp_path):
    out, chain = rendered
    other = stream_copy(out, tmp_path / "other.mp4")          # different bytes, same pixels
    shutil.copy(sidecar_path(out), sidecar_path(other))
    rep = inspect_file(other, layers=("manifest",), **FAST)
    m = rep.layer("manifest")
    assert m.status == INVALID and "hash mismatch" in m.summary
    assert m.details["recorded_sha256"] != m.details["file_sha256"]


def test_unsigned_render_passes_without_c2pa(tmp_path, capsys):
    src = write_clip(tmp_path / "in.mp4", w=320, h=240, n=12)
    out = tmp_path / "plain.mp4"
    _render(src, out, {cs.ENV_CONFIG: str(tmp_path / "no-such.toml")})
    err = capsys.readouterr().err
    assert err.count("C2PA signing is off") == 1                # one clear warning
    assert load_manifest(out)["disclosure"]["c2pa"]["signed"] is False
    rep = inspect_file(out, layers=("tags", "manifest", "c2pa", "watermark"), **FAST)
    assert rep.layer("c2pa").status == ABSENT and rep.ok
    assert rep.layer("tags").status == OK and rep.layer("watermark").status == OK


def test_unmarked_file_fails_every_layer(tmp_path):
    plain = write_clip(tmp_path / "camera.mp4", w=320, h=240, n=6)
    rep = inspect_file(plain, label_frames=2, watermark_frames=6, label_method="signature")
    st = {r.layer: r.status for r in rep.layers}
    assert st["label"] == MISSING and st["tags"] == MISSING and st["manifest"] == MISSING
    assert st["watermark"] == MISSING and st["c2pa"] == ABSENT and rep.exit_code == 1
    with pytest.raises(MediaError):
        inspect_file(tmp_path / "nope.mp4")
    assert main(["verify", str(tmp_path / "nope.mp4")]) == MediaError.exit_code
