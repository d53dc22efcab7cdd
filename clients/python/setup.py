"""Build hook: generates the gRPC stubs from the repository's proto/ into
the build, next to the hand-written govchain_client package.

The stubs keep the proto packages' names (govchain.types.v1, ...), so the
generated modules import each other as protoc wrote them.
"""

import os
import pathlib

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
# GOVCHAIN_PROTO_DIR names another proto tree, e.g. when building from a
# copy of this folder outside the repository.
PROTO_DIR = pathlib.Path(os.environ.get("GOVCHAIN_PROTO_DIR", HERE / ".." / ".." / "proto")).resolve()


def proto_files(root):
    files = sorted(str(path) for path in root.rglob("*.proto"))
    if not files:
        raise SystemExit(f"no .proto files under {root}")
    return files


def generate(out_dir):
    """Runs grpc_tools.protoc over every file under PROTO_DIR into out_dir."""
    from grpc_tools import protoc

    os.makedirs(out_dir, exist_ok=True)
    # protoc needs the well-known types that grpcio-tools ships.
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    arguments = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *proto_files(PROTO_DIR),
    ]
    if protoc.main(arguments) != 0:
        raise SystemExit(f"grpc_tools.protoc failed on {PROTO_DIR}")
    # Regular packages, so that the installed wheel lists every module.
    for folder, _, _ in os.walk(os.path.join(out_dir, "govchain")):
        init = os.path.join(folder, "__init__.py")
        if not os.path.exists(init):
            open(init, "w").close()


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        generate(self.build_lib)


setup(cmdclass={"build_py": BuildWithStubs})
