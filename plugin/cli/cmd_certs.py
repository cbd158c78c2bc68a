"""``facecomp certs dev [-o DIR]``: a local C2PA test chain; ``facecomp certs status``: is signing set up?"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    dev = sub.add_parser("dev", help="create a development root CA and an ES256 signing certificate with the "
                                     "C2PA claim-signing EKU (trusted by nobody but you)")
    dev.add_argument("-o", "--output", default="facecomp-dev-certs", metavar="DIR",
                     help="folder to write root-ca.pem, chain.pem, signer-key.pem, c2pa.toml (default %(default)s)")
    dev.add_argument("--days", type=int, default=365, help="validity of the signing certificate")
    dev.add_argument("--force", action="store_true", help="overwrite files already in DIR")
    sub.add_parser("status", help="say whether C2PA signing credentials are configured, and where from")


def run(args: argparse.Namespace) -> int:
    from ..disclosure import c2pa_sign
    if args.action == "status":
        st = c2pa_sign.credentials_status()
        print(st.reason)
        return 0 if st.configured else 1
    chain = c2pa_sign.make_dev_chain(args.output, days=args.days, overwrite=args.force)
    print(f"""wrote a development C2PA signing identity (for trying signing out; nobody else trusts it):
  root CA (trust anchor)  {chain.root_cert}
  chain (leaf + root)     {chain.chain}
  private key             {chain.key}
  configuration           {chain.config}

point facecomp at it, either with environment variables:
  export {c2pa_sign.ENV_CERT}={chain.chain.resolve()}
  export {c2pa_sign.ENV_KEY}={chain.key.resolve()}
or with the configuration file:
  export {c2pa_sign.ENV_CONFIG}={chain.config.resolve()}
  (or copy it, with the two PEM files, to {c2pa_sign.default_config_path().parent}/)

then render, and check the signature against this root:
  facecomp render IN.mp4 -o OUT.mp4 ...
  facecomp verify OUT.mp4 --trust {chain.root_cert.resolve()}""")
    return 0
