"""C2PA Content Credentials with the real c2pa-python: dev chain, credentials, signing, validation, tamper."""

from __future__ import annotations

import io
import json

import av
import pytest

pytest.importorskip("c2pa", reason="the provenance extra (c2pa-python) is not installed")

from cryptography import x509  # noqa: E402  (comes with c2pa-python)
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from facecomp.disclosure import c2pa_sign as cs  # noqa: E402
from facecomp.disclosure.metadata import IPTC_COMPOSITE_TRAINED  # noqa: E402
from facecomp.errors import OutputError, SettingsError  # noqa: E402
from facecomp.render.progress import make_progress  # noqa: E402

from mediagen import write_clip  # noqa: E402

MODELS = [{"name": "inswapper", "version": "128", "sha256": "ab" * 32, "licence": "non-commercial research"}]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return cs.make_dev_chain(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def creds(chain):
    return cs.C2paCredentials.from_config(env={}, config_path=chain.config)


def tagged_clip(path, n=6, seed=0):
    """A small H.264 MP4 with a container tag, written by PyAV."""
    write_clip(path, w=192, h=128, n=n, container_options={"movflags": "use_metadata_tags"})
    return path


def test_dev_chain_is_what_c2pa_requires(chain):
    root = x509.load_pem_x509_certificate(chain.root_cert.read_bytes())
    leaf, root2 = x509.load_pem_x509_certificates(chain.chain.read_bytes())
    assert root2 == root
    leaf.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    ekus = {o.dotted_string for o in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value}
    assert cs.EKU_C2PA_CLAIM_SIGNING in ekus
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey) and leaf.public_key().curve.name == "secp256r1"
    assert (chain.key.stat().st_mode & 0o777) == 0o600
    with pytest.raises(OutputError, match="overwrite"):
        cs.make_dev_chain(chain.root_cert.parent)


def test_credentials_from_env_and_config(chain, tmp_path):
    env = {cs.ENV_CERT: str(chain.chain), cs.ENV_KEY: str(chain.key), cs.ENV_TSA: "http://tsa.invalid/"}
    c = cs.C2paCredentials.from_config(env=env, config_path=tmp_path / "none.toml")
    assert c.alg == "es256" and c.tsa_url == "http://tsa.invalid/" and b"BEGIN CERTIFICATE" in c.cert_chain_pem
    assert "PRIVATE KEY" not in repr(c)                      # the key never reaches a log line
    with pytest.raises(SettingsError, match="both"):
        cs.C2paCredentials.from_config(env={cs.ENV_CERT: str(chain.chain)})
    with pytest.raises(SettingsError, match="algorithm"):
        cs.C2paCredentials.from_config(env={**env, cs.ENV_ALG: "md5"})
    with pytest.raises(SettingsError, match="cannot read"):
        cs.C2paCredentials.from_config(env={cs.ENV_CERT: str(tmp_path / "x.pem"), cs.ENV_KEY: str(chain.key)})
    assert cs.C2paCredentials.from_config(env={}, config_path=tmp_path / "none.toml") is None
    # the generated c2pa.toml names its files relative to itself
    c2 = cs.C2paCredentials.from_config(env={}, config_path=chain.config)
    assert c2.private_key_pem == chain.key.read_bytes()
    bad = tmp_path / "bad.toml"
    bad.write_text('cert = "chain.pem"\n')
    with pytest.raises(SettingsError, match="'cert' and 'key'"):
        cs.C2paCredentials.from_config(env={}, config_path=bad)


def test_credentials_status_says_why_not(chain, tmp_path):
    st = cs.credentials_status(env={}, config_path=tmp_path / "none.toml")
    assert not st.configured and cs.ENV_CERT in st.reason and "certs dev" in st.reason
    st = cs.credentials_status(env={cs.ENV_KEY: str(chain.key)}, config_path=tmp_path / "none.toml")
    assert not st.configured and "both" in st.reason
    st = cs.credentials_status(env={}, config_path=chain.config)
    assert st.configured and st.credentials is not None and "es256" in st.reason


def test_sign_and_read_round_trip(chain, creds, tmp_path, tmp_path_factory):
    src = tagged_clip(tmp_path / "source.mp4")
    out = tagged_clip(tmp_path / "out.mp4", seed=1)
    with av.open(str(out)) as c:
        before_frames = c.streams.video[0].frames
    cs.sign_file(out, parent=src, credentials=creds, model_records=MODELS)
    assert not [p for p in tmp_path.iterdir() if ".c2pa" in p.name]     # no temp file left
    rep = cs.read_c2pa(out)
    assert rep.present and rep.valid and not rep.trusted and rep.validation_state == "Valid"
    assert rep.claim_generator.startswith("facecomp/")
    assert [a["action"] for a in rep.actions] == ["c2pa.opened", "c2pa.edited"]
    assert rep.digital_source_types == (IPTC_COMPOSITE_TRAINED,)
    assert "face" in rep.actions[1]["description"].lower()
    assert rep.models == tuple(MODELS) and rep.ingredients == ("source.mp4",)
    assert cs.MODELS_ASSERTION in rep.assertions and rep.signer == "facecomp dev signer"
    trusted = cs.read_c2pa(out, trust_anchors=chain.root_cert)
    assert trusted.valid and trusted.trusted and trusted.validation_state == "Trusted"
    other = cs.make_dev_chain(tmp_path_factory.mktemp("other"))
    foreign = cs.read_c2pa(out, trust_anchors=other.root_cert)
    assert foreign.present and not foreign.trusted and "signingCredential.untrusted" in foreign.errors
    with av.open(str(out)) as c:                                 # still a playable video, same frames
        assert c.streams.video[0].frames == before_frames
        assert len(list(c.decode(video=0))) == 6
    json.dumps(rep.to_dict())                                     # JSON-able for verify --json


def test_flipped_media_byte_invalidates(creds, tmp_path):
    out = tagged_clip(tmp_path / "out.mp4")
    cs.sign_file(out, parent=None, credentials=creds)
    data = bytearray(out.read_bytes())
    mdat = data.find(b"mdat")
    assert mdat > 0
    data[mdat + 400] ^= 0x01
    bad = tmp_path / "tampered.mp4"
    bad.write_bytes(bytes(data))
    rep = cs.read_c2pa(bad)
    assert rep.present and not rep.valid and rep.validation_state == "Invalid"
    assert any("mismatch" in e for e in rep.errors)


def test_remux_strips_the_manifest(creds, tmp_path):
    out = tagged_clip(tmp_path / "out.mp4")
    cs.sign_file(out, parent=None, credentials=creds)
    assert cs.read_c2pa(out).valid
    remux = tmp_path / "remux.mp4"
    with av.open(str(out)) as src, av.open(str(remux), "w") as dst:
        ost = dst.add_stream_from_template(src.streams.video[0])
        for pkt in src.demux(src.streams.video[0]):
            if pkt.dts is None:
                continue
            pkt.stream = ost
            dst.mux(pkt)
    assert not cs.read_c2pa(remux).present


def test_failed_signing_leaves_the_file_untouched(chain, tmp_path, tmp_path_factory):
    out = tagged_clip(tmp_path / "out.mp4")
    before = out.read_bytes()
    other = cs.make_dev_chain(tmp_path_factory.mktemp("mismatch"))
    wrong = cs.C2paCredentials(chain.chain.read_bytes(), other.key.read_bytes(), source="test")  # key != cert
    with pytest.raises(cs.C2paError, match="signing failed"):
        cs.sign_file(out, parent=None, credentials=wrong)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    mkv = tmp_path / "x.mkv"
    mkv.write_bytes(b"\x1a\x45\xdf\xa3")
    with pytest.raises(cs.C2paError, match="MP4/MOV"):
        cs.sign_file(mkv, parent=None, credentials=cs.C2paCredentials.from_config(env={}, config_path=chain.config))


def test_render_finalizer_signs_or_warns_once(chain, tmp_path):
    stream = io.StringIO()
    progress = make_progress("json", stream)
    hook = cs.render_finalizer(progress, env={}, config_path=tmp_path / "none.toml")
    clip = tagged_clip(tmp_path / ".out.facecomp-1234.mp4")
    before = clip.read_bytes()
    r1 = hook(clip, str(clip), {"models": MODELS})
    r2 = hook(clip, str(clip), {"models": MODELS})
    assert r1 == r2 and r1["c2pa"]["signed"] is False and cs.ENV_CERT in r1["c2pa"]["reason"]
    warnings = [json.loads(x) for x in stream.getvalue().splitlines() if '"warning"' in x]
    assert len(warnings) == 1 and "C2PA" in warnings[0]["text"]
    assert clip.read_bytes() == before
    # configured: the temp-named MP4 is signed in place, parent = the input
    src = tagged_clip(tmp_path / "input.mp4")
    hook = cs.render_finalizer(None, env={}, config_path=chain.config)
    res = hook(clip, str(src), {"models": MODELS})
    assert res["c2pa"]["signed"] is True and "facecomp dev signer" in res["c2pa"]["signer"]
    rep = cs.read_c2pa(clip, trust_anchors=chain.root_cert)
    assert rep.trusted and rep.ingredients == ("input.mp4",) and rep.models == tuple(MODELS)


def test_non_mp4_parent_is_referenced_by_hash(creds, tmp_path, shared_media):
    out = tagged_clip(tmp_path / "out.mp4")
    cs.sign_file(out, parent=shared_media / "grid_bbaf2n.mpg", credentials=creds)
    rep = cs.read_c2pa(out)
    assert rep.valid and rep.ingredients == ("grid_bbaf2n.mpg",)


def test_cli_certs_dev_and_status(tmp_path, capsys, monkeypatch):
    from facecomp.cli import main
    d = tmp_path / "dev"
    assert main(["certs", "dev", "-o", str(d)]) == 0
    out = capsys.readouterr().out
    assert cs.ENV_CERT in out and str((d / "chain.pem").resolve()) in out and "verify" in out
    assert main(["certs", "dev", "-o", str(d)]) == OutputError.exit_code      # refuses to overwrite
    assert main(["certs", "dev", "-o", str(d), "--force"]) == 0
    monkeypatch.delenv(cs.ENV_CERT, raising=False)
    monkeypatch.delenv(cs.ENV_KEY, raising=False)
    monkeypatch.setenv(cs.ENV_CONFIG, str(d / "c2pa.toml"))
    capsys.readouterr()
    assert main(["certs", "status"]) == 0 and "es256" in capsys.readouterr().out
    monkeypatch.setenv(cs.ENV_CONFIG, str(tmp_path / "missing.toml"))
    assert main(["certs", "status"]) == 1 and "no credentials" in capsys.readouterr().out
