"""C2PA Content Credentials: sign an output as its very last write, and read a file's credentials back.

A label can be cropped and container tags stripped; a C2PA manifest binds the disclosure to the exact
bytes of the file with a signature (a remux or a flipped byte invalidates or removes it). Signing needs
the user's own certificate chain and private key (:class:`C2paCredentials`); ``facecomp certs dev``
makes a local test chain for trying it out. ``c2pa-python`` (the ``provenance`` extra) is imported
lazily, so everything else in facecomp works without it.

Tested against c2pa-python 0.38.1 (c2pa-rs 0.91): ``Builder``, ``Signer.from_info``, ``Reader`` with a
``Context`` carrying the trust settings.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import FacecompError, MediaError, OutputError, SettingsError
from ..hashing import sha256_file

# IPTC digital source type for a real recording in which a trained model replaced parts (the face).
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
MODELS_ASSERTION = "org.facecomp.models"
DEFAULT_DESCRIPTION = ("Face replaced by facecomp (trained face-swap model) and composited into the original "
                       "footage; every frame carries a visible SYNTHETIC label and an invisible watermark.")

ENV_CERT = "FACECOMP_C2PA_CERT"        # path to the certificate chain PEM (leaf first, then intermediates)
ENV_KEY = "FACECOMP_C2PA_KEY"          # path to the leaf's private key PEM
ENV_ALG = "FACECOMP_C2PA_ALG"          # es256 (default), es384, es512, ps256, ps384, ps512, ed25519
ENV_TSA = "FACECOMP_C2PA_TSA_URL"      # optional RFC 3161 timestamp authority
ENV_CONFIG = "FACECOMP_C2PA_CONFIG"    # path to a TOML file with keys cert, key, alg, tsa_url
CONFIG_NAME = "c2pa.toml"
ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")

# extended key usages c2pa accepts for a claim signer
EKU_C2PA_CLAIM_SIGNING = "1.3.6.1.4.1.62558.2.1"
EKU_DOCUMENT_SIGNING = "1.3.6.1.5.5.7.3.36"


class C2paError(FacecompError, RuntimeError):
    """Signing or reading Content Credentials failed (bad credentials, unsupported file, c2pa missing)."""

    exit_code = 12


def _import_c2pa():
    try:
        import c2pa  # noqa: PLC0415 - optional extra
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise C2paError("c2pa-python is not installed", hint="pip install 'facecomp[provenance]'") from exc
    return c2pa


def default_config_path() -> Path:
    """Where ``from_config`` looks when no environment variable names a file."""
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir
    return Path(user_config_dir("facecomp")) / CONFIG_NAME


@dataclass(frozen=True)
class C2paCredentials:
    """A signing identity: certificate chain PEM (leaf first), private key PEM, algorithm, optional TSA."""

    cert_chain_pem: bytes
    private_key_pem: bytes = field(repr=False)
    alg: str = "es256"
    tsa_url: str | None = None
    source: str = ""            # where they came from, for messages

    def __post_init__(self) -> None:
        if self.alg not in ALGORITHMS:
            raise SettingsError(f"unknown C2PA signing algorithm {self.alg!r}",
                                hint=f"use one of {', '.join(ALGORITHMS)}")
        if b"BEGIN CERTIFICATE" not in self.cert_chain_pem:
            raise SettingsError("the C2PA certificate chain is not a PEM certificate", path=self.source or None,
                                hint="point FACECOMP_C2PA_CERT at a PEM file, leaf certificate first")
        if b"PRIVATE KEY" not in self.private_key_pem:
            raise SettingsError("the C2PA private key is not a PEM private key", path=self.source or None,
                                hint="point FACECOMP_C2PA_KEY at a PEM (PKCS#8) private key")

    @classmethod
    def from_files(cls, cert: str | os.PathLike, key: str | os.PathLike, *, alg: str = "es256",
                   tsa_url: str | None = None) -> "C2paCredentials":
        data = []
        for what, p in (("certificate chain", cert), ("private key", key)):
            p = Path(p).expanduser()
            try:
                data.append(p.read_bytes())
            except OSError as exc:
                raise SettingsError(f"cannot read the C2PA {what}: {exc.strerror or exc}", path=p,
                                    hint="check the path in FACECOMP_C2PA_CERT/KEY or the c2pa.toml") from exc
        return cls(data[0], data[1], alg=alg.lower(), tsa_url=tsa_url or None, source=os.fspath(cert))

    @classmethod
    def from_config(cls, env: Mapping[str, str] | None = None,
                    config_path: str | os.PathLike | None = None) -> "C2paCredentials | None":
        """Credentials from the environment, else from the config file; ``None`` when neither has any.

        Environment: ``FACECOMP_C2PA_CERT`` + ``FACECOMP_C2PA_KEY`` (paths), optional ``FACECOMP_C2PA_ALG``
        and ``FACECOMP_C2PA_TSA_URL``. File (TOML, ``FACECOMP_C2PA_CONFIG`` or the user config dir's
        ``facecomp/c2pa.toml``): ``cert``, ``key``, ``alg``, ``tsa_url``; relative paths are relative to the
        file. A half configuration (a cert without a key) is an error, not silence.
        """
        env = os.environ if env is None else env
        cert, key = env.get(ENV_CERT), env.get(ENV_KEY)
        if cert or key:
            if not (cert and key):
                raise SettingsError(f"C2PA signing needs both {ENV_CERT} and {ENV_KEY}",
                                    hint="set both, or neither to sign nothing")
            return cls.from_files(cert, key, alg=env.get(ENV_ALG, "es256"), tsa_url=env.get(ENV_TSA))
        path = Path(config_path).expanduser() if config_path is not None else default_config_path()
        if not path.is_file():
            return None
        import tomllib
        try:
            conf = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read the C2PA configuration: {exc}", path=path,
                                hint="fix the TOML (keys cert, key, alg, tsa_url)") from exc
        conf = conf.get("c2pa", conf)
        if not conf.get("cert") or not conf.get("key"):
            raise SettingsError("the C2PA configuration needs both 'cert' and 'key'", path=path)
        base = path.parent
        return cls.from_files(base / Path(conf["cert"]).expanduser(), base / Path(conf["key"]).expanduser(),
                              alg=str(conf.get("alg", "es256")), tsa_url=conf.get("tsa_url"))


@dataclass(frozen=True)
class CredentialsStatus:
    """Whether signing is possible, and in one sentence why not."""

    configured: bool
    reason: str
    credentials: C2paCredentials | None = None


def credentials_status(env: Mapping[str, str] | None = None,
                       config_path: str | os.PathLike | None = None) -> CredentialsStatus:
    """For the renderer: sign or warn once. Never raises; a broken configuration is a reason too."""
    try:
        _import_c2pa()
    except C2paError as exc:
        return CredentialsStatus(False, f"C2PA signing is off: {exc}")
    try:
        creds = C2paCredentials.from_config(env, config_path)
    except SettingsError as exc:
        return CredentialsStatus(False, f"C2PA signing is off: {exc}")
    if creds is None:
        where = default_config_path() if config_path is None else Path(config_path)
        return CredentialsStatus(False, "C2PA signing is off: no credentials configured "
                                        f"(set {ENV_CERT} and {ENV_KEY}, or write {where}; "
                                        "'facecomp certs dev' makes a test chain); every other layer is written")
    return CredentialsStatus(True, f"C2PA signing with {creds.alg} credentials from {creds.source}", creds)


# --------------------------------------------------------------------------------------------- signing

_MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime"}


def _mime(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise C2paError(f"C2PA signing supports MP4/MOV outputs, not {path.suffix or 'no extension'}", path=path,
                        hint="render to .mp4 or .mov to carry Content Credentials")
    return mime


def _tool_version() -> str:
    from .. import __version__
    return __version__


def _manifest_definition(description: str, model_records: Sequence[Mapping[str, Any]],
                         title: str, parent_title: str | None) -> dict:
    version = _tool_version()
    edited = {"action": "c2pa.edited", "digitalSourceType": DIGITAL_SOURCE_TYPE, "description": description,
              "softwareAgent": {"name": "facecomp", "version": version}}
    if parent_title is None:  # no source to point at: the composite is recorded as created here
        actions = [dict(edited, action="c2pa.created")]
    else:
        actions = [{"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]},
                    "description": f"opened {parent_title}"}, edited]
    return {
        "claim_generator_info": [{"name": "facecomp", "version": version}],
        "title": title,
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {"actions": actions},
            },
            {
                "label": MODELS_ASSERTION,
                "data": {"models": [
                    {k: str(v) for k, v in rec.items() if k in ("name", "version", "sha256", "licence")}
                    for rec in model_records
                ]},
            },
        ],
    }


def sign_file(path: str | os.PathLike, *, parent: str | os.PathLike | None,
              credentials: C2paCredentials, description: str = DEFAULT_DESCRIPTION,
              model_records: Sequence[Mapping[str, Any]] = (), title: str | None = None,
              media_type: str | None = None) -> None:
    """Embed a signed C2PA manifest into the MP4/MOV at ``path``, in place and atomically.

    The parent (the source clip) becomes the ``parentOf`` ingredient behind ``c2pa.opened``; the
    ``c2pa.edited`` action (``c2pa.created`` without a parent) carries the IPTC ``compositeWithTrainedAlgorithmicMedia`` source type and
    ``description``; ``model_records`` go into the ``org.facecomp.models`` assertion. Must be the last
    write to the media bytes: any later change breaks the hard binding. Writes to a temp name beside
    the file and renames it over the original only when signing succeeded.
    """
    c2pa = _import_c2pa()
    path = Path(path)
    mime = media_type or _mime(path)
    if not path.is_file():
        raise OutputError("cannot sign: the file does not exist", path=path)
    parent_path = Path(parent) if parent is not None else None
    definition = _manifest_definition(description, model_records, title or path.name,
                                      parent_path.name if parent_path else None)
    alg = getattr(c2pa.C2paSigningAlg, credentials.alg.upper())
    tmp = None
    try:
        info = c2pa.C2paSignerInfo(alg, credentials.cert_chain_pem, credentials.private_key_pem,
                                   credentials.tsa_url.encode() if credentials.tsa_url else None)
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(definition) as builder:
            if parent_path is not None:
                pmime = _MIME.get(parent_path.suffix.lower())
                ingredient = {"title": parent_path.name, "relationship": "parentOf", "label": "parent"}
                if pmime is not None:
                    with open(parent_path, "rb") as src:
                        builder.add_ingredient(ingredient, pmime, src)
                else:  # a format c2pa cannot parse (.mpg, .mkv): reference it by title and hash only
                    ingredient["format"] = "application/octet-stream"
                    ingredient["description"] = f"sha256 {sha256_file(parent_path)}"
                    builder.add_ingredient(ingredient, "application/octet-stream", io.BytesIO())
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".c2pa{path.suffix}", dir=path.parent)
            os.close(fd)
            with open(path, "rb") as src, open(tmp, "w+b") as dst:
                builder.sign(signer, mime, src, dst)
                dst.flush()
                os.fsync(dst.fileno())
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)  # mkstemp's 0600 would make the signed media private
        os.replace(tmp, path)
        tmp = None
    except c2pa.C2paError as exc:
        raise C2paError(f"C2PA signing failed: {exc}", path=path,
                        hint="check the certificate chain (leaf first, c2pa EKU) and key; "
                             "'facecomp certs dev' makes a test chain") from exc
    except OSError as exc:
        raise OutputError(f"C2PA signing could not write: {exc}", path=path) from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def render_finalizer(progress=None, *, env: Mapping[str, str] | None = None,
                     config_path: str | os.PathLike | None = None, description: str = DEFAULT_DESCRIPTION):
    """The renderer's finalize hook: sign the finished temp media as its last write, or warn once.

    Returns ``hook(tmp_path, input_path, partial_manifest) -> dict`` whose result goes into the manifest's
    ``disclosure`` section as ``{"c2pa": {...}}``. Credentials are resolved once, here; without them (or
    for a container C2PA cannot carry) the hook emits ONE warning through ``progress`` and every other
    layer is still written. A signing failure with configured credentials is an error, not a warning.
    """
    status = credentials_status(env, config_path)

    def warn(text: str) -> None:
        if progress is None:
            return
        try:  # once per run (a queue renders many outputs through one progress), again only with -v
            progress.message(text, "warning", once="c2pa-off")
        except TypeError:  # a host's own Progress without once-only messages
            progress.message(text, "warning")

    def hook(tmp: Path, input_path: str, partial: dict) -> dict:
        tmp = Path(tmp)
        if not status.configured:
            warn(status.reason)
            return {"c2pa": {"signed": False, "reason": status.reason}}
        mime = _MIME.get(tmp.suffix.lower())
        if mime is None:
            reason = f"C2PA signing skipped: {tmp.suffix} outputs cannot carry Content Credentials (use .mp4 or .mov)"
            warn(reason)
            return {"c2pa": {"signed": False, "reason": reason}}
        creds = status.credentials
        sign_file(tmp, parent=input_path, credentials=creds, description=description,
                  model_records=partial.get("models") or (), media_type=mime)
        return {"c2pa": {"signed": True, "alg": creds.alg, "signer": _leaf_subject(creds.cert_chain_pem),
                         "tsa_url": creds.tsa_url}}

    return hook


def _leaf_subject(chain_pem: bytes) -> str | None:
    try:
        from cryptography import x509
        return x509.load_pem_x509_certificates(chain_pem)[0].subject.rfc4514_string()
    except Exception:  # noqa: BLE001 - only descriptive
        return None


# --------------------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class C2paReport:
    """What a file's Content Credentials say. ``valid``: signature and hard binding check out;
    ``trusted``: also chains to one of the given trust anchors."""

    present: bool
    valid: bool = False
    trusted: bool = False
    validation_state: str | None = None      # c2pa's Invalid / Valid / Trusted
    errors: tuple[str, ...] = ()             # failure codes, e.g. assertion.bmffHash.mismatch
    claim_generator: str | None = None
    signer: str | None = None                # certificate issuer/common name as c2pa reports it
    actions: tuple[dict, ...] = ()
    digital_source_types: tuple[str, ...] = ()
    models: tuple[dict, ...] = ()
    ingredients: tuple[str, ...] = ()
    assertions: tuple[str, ...] = ()         # assertion labels of the active manifest

    def to_dict(self) -> dict:
        return {"present": self.present, "valid": self.valid, "trusted": self.trusted,
                "validation_state": self.validation_state, "errors": list(self.errors),
                "claim_generator": self.claim_generator, "signer": self.signer,
                "actions": list(self.actions), "digital_source_types": list(self.digital_source_types),
                "models": list(self.models), "ingredients": list(self.ingredients),
                "assertions": list(self.assertions)}


def _read_anchors(trust_anchors: str | os.PathLike | bytes | Sequence | None) -> str | None:
    if trust_anchors is None:
        return None
    if isinstance(trust_anchors, bytes):
        return trust_anchors.decode()
    if isinstance(trust_anchors, (str, os.PathLike)):
        text = os.fspath(trust_anchors)
        if "BEGIN CERTIFICATE" in text:
            return text
        try:
            return Path(text).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"cannot read the trust anchors: {exc.strerror or exc}", path=text,
                                hint="pass a PEM file of root certificates") from exc
    return "\n".join(_read_anchors(a) or "" for a in trust_anchors)


def read_c2pa(path: str | os.PathLike,
              trust_anchors: str | os.PathLike | bytes | Sequence | None = None) -> C2paReport:
    """Read and validate the C2PA manifest store of a file. Absence is a report, not an error."""
    c2pa = _import_c2pa()
    path = Path(path)
    if not path.is_file():
        raise MediaError("no such file", path=path)
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        return C2paReport(present=False, errors=(f"c2pa cannot carry a manifest in {path.suffix} files",))
    anchors = _read_anchors(trust_anchors)
    config: dict = {"verify": {"verify_trust": anchors is not None}}
    if anchors is not None:
        config["trust"] = {"trust_anchors": anchors}
    try:
        with c2pa.Context.from_dict(config) as ctx, open(path, "rb") as f:
            reader = c2pa.Reader.try_create(mime, f, context=ctx)
            if reader is None:
                return C2paReport(present=False)
            with reader:
                store = json.loads(reader.json())
    except c2pa.C2paError as exc:
        text = str(exc)
        # a manifest that is there but cannot be parsed or matched is present-and-invalid
        return C2paReport(present=True, valid=False, validation_state="Invalid", errors=(text,))
    return _report_from_store(store, anchors is not None)


def _report_from_store(store: dict, trust_checked: bool) -> C2paReport:
    active_label = store.get("active_manifest")
    manifests = store.get("manifests") or {}
    active = manifests.get(active_label) if active_label else None
    if active is None:
        return C2paReport(present=False)
    state = store.get("validation_state")
    statuses = store.get("validation_status") or []
    results = store.get("validation_results") or {}
    failures = list((results.get("activeManifest") or {}).get("failure") or [])
    codes = [s.get("code", "") for s in statuses] + [s.get("code", "") for s in failures]
    errors = tuple(dict.fromkeys(c for c in codes if c))
    untrusted_only = all(c in ("signingCredential.untrusted",) for c in errors)
    valid = state in ("Valid", "Trusted") or (state is None and (not errors or untrusted_only))
    trusted = trust_checked and state == "Trusted"
    actions: list[dict] = []
    models: list[dict] = []
    labels: list[str] = []
    for a in active.get("assertions") or []:
        label = a.get("label", "")
        labels.append(label)
        if label.startswith("c2pa.actions"):
            actions.extend((a.get("data") or {}).get("actions") or [])
        elif label == MODELS_ASSERTION:
            models.extend((a.get("data") or {}).get("models") or [])
    gen = active.get("claim_generator")
    if not gen:
        info = active.get("claim_generator_info") or []
        gen = " ".join(f"{i.get('name', '')}/{i.get('version', '')}".strip("/") for i in info) or None
    sig = active.get("signature_info") or {}
    return C2paReport(
        present=True, valid=bool(valid), trusted=bool(trusted), validation_state=state, errors=errors,
        claim_generator=gen, signer=sig.get("common_name") or sig.get("issuer"),
        actions=tuple(actions),
        digital_source_types=tuple(a["digitalSourceType"] for a in actions if a.get("digitalSourceType")),
        models=tuple(models),
        ingredients=tuple(i.get("title", "") for i in active.get("ingredients") or []),
        assertions=tuple(labels))


# --------------------------------------------------------------------------------------------- dev chain

@dataclass(frozen=True)
class DevChain:
    root_cert: Path      # the trust anchor to pass to verify --trust
    chain: Path          # leaf + root PEM, what FACECOMP_C2PA_CERT points at
    key: Path            # the leaf's private key (PKCS#8 PEM)
    config: Path         # a c2pa.toml naming chain and key


def make_dev_chain(out_dir: str | os.PathLike, *, days: int = 365, common_name: str = "facecomp dev signer",
                   overwrite: bool = False) -> DevChain:
    """A local test chain: self-signed root CA -> ES256 leaf with the C2PA claim-signing EKU.

    Only for trying signing out; a viewer trusts these files only when given the root as anchor.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    names = {"root": out / "root-ca.pem", "chain": out / "chain.pem", "key": out / "signer-key.pem",
             "config": out / CONFIG_NAME}
    if not overwrite:
        existing = [str(p) for p in names.values() if p.exists()]
        if existing:
            raise OutputError(f"refusing to overwrite {', '.join(existing)}", path=out,
                              hint="choose another folder with -o or pass --force")
    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facecomp development"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "facecomp dev root CA (not trusted)")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=days * 2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facecomp development"),
                           x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    leaf = (x509.CertificateBuilder().subject_name(leaf_name).issuer_name(root_name)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ObjectIdentifier(EKU_C2PA_CLAIM_SIGNING),
                                                  ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                           critical=False)
            .sign(root_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    root_pem = root.public_bytes(pem)
    files = {
        names["root"]: root_pem,
        names["chain"]: leaf.public_bytes(pem) + root_pem,
        names["key"]: leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()),
        names["config"]: (f'# facecomp C2PA signing identity (development only)\n'
                          f'cert = "{names["chain"].name}"\nkey = "{names["key"].name}"\nalg = "es256"\n'
                          f'# tsa_url = "http://timestamp.example/"\n').encode(),
    }
    for p, data in files.items():
        _atomic_write(p, data, private=p == names["key"])
    return DevChain(root_cert=names["root"], chain=names["chain"], key=names["key"], config=names["config"])


def _atomic_write(path: Path, data: bytes, *, private: bool = False) -> None:
    from ..atomic import atomic_write

    atomic_write(path, data, mode=0o600 if private else None)