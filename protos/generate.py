"""Regenerate the Python stubs beside fercodec.proto: `python protos/generate.py`.

--check compares freshly generated stubs with the committed ones and exits 1
when they differ (the drift test runs this).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = Path("fercodec/v1/fercodec.proto")
OUTPUTS = ("fercodec_pb2.py", "fercodec_pb2.pyi", "fercodec_pb2_grpc.py")


def generate(out: Path) -> None:
    from grpc_tools import protoc

    args = ["protoc", f"-I{HERE}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", str(HERE / PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main(argv: list[str]) -> int:
    if "--check" not in argv:
        generate(HERE)
        print(f"wrote {', '.join(str(PROTO.parent / o) for o in OUTPUTS)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [o for o in OUTPUTS if (Path(tmp) / PROTO.parent / o).read_bytes() != (HERE / PROTO.parent / o).read_bytes()]
    if stale:
        print(f"stubs drifted from {PROTO}: {', '.join(stale)}; run `make protos`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
