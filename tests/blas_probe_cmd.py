"""A CLI command module for tests/test_cli_threads.py: it reports the BLAS thread counts it runs under."""

import json


def add_arguments(parser):
    parser.add_argument("out")


def run(args):
    from threadpoolctl import threadpool_info

    with open(args.out, "w") as f:
        json.dump([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"], f)
    return 0
