"""Encode hundreds of real faces in one process, decode them in another configured differently.

The encoder: ONNX Runtime on 1 thread, one face at a time (the edge client).
The decoder: the server's Engine with torch on 2 threads, batches of 32.
Zero mismatched symbols allowed, and every face must pass its checksum.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ENCODE = textwrap.dedent(
    """
    import sys, numpy as np
    from fermodels.data import load_split
    from ferclient.encoder import FaceEncoder
    x, _ = load_split("test", limit=int(sys.argv[2]))
    enc = FaceEncoder(threads=1)
    streams, symbols, qs = [], [], []
    for i, face in enumerate(x):
        q = i % enc.card.num_qualities
        y = enc.latents(face[None])[0]
        streams.append(np.frombuffer(enc.encode(face[None], q)[0], np.uint8))
        symbols.append(enc.tables.symbols(y, q)); qs.append(q)
    np.savez(sys.argv[1], streams=np.array(streams, dtype=object), symbols=np.stack(symbols), qs=np.array(qs))
    """
)

DECODE = textwrap.dedent(
    """
    import sys, numpy as np, torch
    torch.set_num_threads(2)
    from ferwire.bitstream import decode
    from ferwire.card import ModelCard
    from ferserver.engine import Engine, FaceJob, FaceOutput
    d = np.load(sys.argv[1], allow_pickle=True)
    card = ModelCard.load()
    engine = Engine(card, "cpu", threads=2)
    streams = [bytes(s) for s in d["streams"]]
    mismatched = 0
    for i in range(0, len(streams), 32):
        batch = streams[i:i + 32]
        outs = engine.run([FaceJob(s) for s in batch])
        assert all(isinstance(o, FaceOutput) for o in outs), [o for o in outs if not isinstance(o, FaceOutput)][:3]
        for j, s in enumerate(batch):
            h, z = decode(s, engine.models[card.model_tag].tables, card.model_tag)
            assert h.quality == d["qs"][i + j]
            mismatched += int((z != d["symbols"][i + j]).sum())
    print(mismatched, len(streams))
    """
)


def test_other_process_other_threads_other_batch_decodes_every_symbol(tmp_path):
    path = tmp_path / "coded.npz"
    subprocess.run([sys.executable, "-c", ENCODE, str(path), "300"], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = subprocess.run([sys.executable, "-c", DECODE, str(path)], check=True, capture_output=True, text=True).stdout.split()
    mismatched, n = int(out[-2]), int(out[-1])
    assert n == 300 and mismatched == 0
