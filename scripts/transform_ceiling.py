"""What a model's transforms lose before any bit is spent: synthesis of the *unquantized* latent.

    python scripts/transform_ceiling.py [--model-dir DIR] [--split val]

For each quality's gains it decodes g_s(g_a(x)) with no rounding (infinite rate)
and prints PSNR and the deployed classifier's accuracy (mirror pair, as served),
next to the same classifier on the uncompressed faces and on the real
reconstructions. If the unquantized row is already below the uncompressed one,
no amount of rate (and no entropy coding) closes the gap: the transforms do not
keep what the classifier needs. docs/ceiling quotes it.
"""

from __future__ import annotations

import argparse
import sys

from fermodels import argtypes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default=None, help="model directory or bundled model's name (default: the shipped one)")
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--threads", type=argtypes.threads, default=0, help="torch CPU threads (0 = torch default)")
    args = p.parse_args(argv)

    from ferwire.card import ModelCard

    try:  # the card before torch loads: a directory that is not a model is one line at once
        card = ModelCard.load(args.model_dir)
        import torch
        import torch.nn.functional as F

        from fermodels.bundle import decoded_faces, load_torch_models
        from fermodels.data import load_split, to_tensor
        from ferwire.entropy import EntropyTables

        codec, clf = load_torch_models(card)  # an expression model has no codec.pt: one line too
        tables = EntropyTables.load(card.file("tables.npz"))
    except (FileNotFoundError, ValueError) as e:
        print(f"transform_ceiling: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    faces, labels = load_split(args.split)
    x, y = to_tensor(faces), torch.from_numpy(labels)

    def row(x_hat):
        psnr = (-10 * torch.log10(F.mse_loss(x_hat, x, reduction="none").mean((1, 2, 3)).clamp_min(1e-10))).mean().item()
        pred = torch.cat([clf.probabilities(x_hat[i : i + 512]).argmax(1) for i in range(0, len(x), 512)])
        return psnr, 100 * (pred == y).float().mean().item()

    print(f"{card.model_id} on {args.split} ({len(x)} faces); accuracy: deployed classifier, mirror pair")
    with torch.inference_mode():
        print(f"uncompressed                       accuracy {row(x)[1]:.2f} %")
        latent = torch.cat([codec.g_a(x[i : i + 512]) for i in range(0, len(x), 512)])  # the same at every quality
        for q in range(card.num_qualities):
            ceiling = torch.cat([codec.synthesize(latent[i : i + 512] * codec._gain(q), q) for i in range(0, len(x), 512)])
            cp, ca = row(ceiling)
            rp, ra = row(decoded_faces(codec, tables, x, q))
            print(f"q{q}  unquantized {cp:5.2f} dB {ca:.2f} %   coded {rp:5.2f} dB {ra:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
