"""A CLI command module for tests/test_cli_threads.py: it reports the BLAS and OpenCV thread counts it runs
under."""

import json


def add_arguments(parser):
    parser.add_argument("out")


def run(args):
    import cv2
    from threadpoolctl import threadpool_info

    with open(args.out, "w") as f:
        json.dump({"blas": [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"],
                   "opencv": cv2.getNumThreads()}, f)
    return 0
