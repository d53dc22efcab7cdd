"""What the package's devnet scenarios (devnet_flow.py, approval_flow.py)
share: the check that fails a scenario, its step and ok lines, reading the
devnet's files, and the runner that turns a scenario into an exit code.
Not a unit test module (unittest discovers test_*.py only)."""

import argparse
import os
import sys
import time

import grpc


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def step(text):
    print(f"step: {text}", flush=True)


def ok(text):
    print(f"  ok: {text}", flush=True)


def read(*parts):
    with open(os.path.join(*parts), "rb") as f:
        return f.read()


def main(run, doc):
    """Runs `run(devnet_dir)` from the command line (`--devnet DIR`): exit
    0 with "all steps passed", 1 at the first failed check or unexpected
    gRPC error."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--devnet", required=True, help="devnet directory (devnet.json)")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        run(args.devnet)
    except CheckFailed as failure:
        print(f"FAILED: {failure}", flush=True)
        return 1
    except grpc.RpcError as err:
        print(f"FAILED: unexpected {err.code().name}: {err.details()}", flush=True)
        return 1
    print(f"all steps passed in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit("flow_support is imported by the devnet scenarios, not run")
