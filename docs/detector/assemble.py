#!/usr/bin/env python3
"""Rebuild /work/facebench (faces/, nofaces/, manifest.json) from fetched git mirrors.

Inputs (bare mirrors as brought by the `fetch` tool, read with `git show COMMIT:PATH`):
  * vishalw-iitk/Widerface_Yolov5 @ cbae228a9750b8c6caabf508810d05fb1e1fad5d
      Model_compression/Quantization/Pytorch/PTQ/representative_dataset/*.jpg
      (200 WIDER FACE *validation* images, stored by that repo resized to 416x416,
       i.e. each image stretched non-uniformly from its original 1024 x H)
  * ShiqiYu/libfacedetection.train @ 0047ac24afb1a50a0c6105001c89d1b5b805dbf1
      data/widerface/labelv2/val/gt/wider_face_val.mat   (official WIDER FACE val ground truth,
                                                            the file shipped with the WIDER eval_tools)
      data/widerface/labelv2/val/gt/wider_{easy,medium,hard}_val.mat (official setting lists)
      data/widerface/labelv2/val/labelv2.txt  (used ONLY for the original image sizes: "# path W H")
  * majedelhelou/denoising_datasets @ 58234876fef6f1b56306705c78dfd40cdb837b86
      CSun_Hays80/*.jpg, CUrban100/*.png  (scene / architecture photos; a hand-checked
      face-free subset is listed in NOFACE_SUN / NOFACE_URBAN below)

Face images: by default ("restore" mode) each 416x416 stretched JPEG is resized (LANCZOS,
downsampling only) back to the original aspect ratio with uniform scale
s = min(416/W, 416/H) (W, H = original size), written as lossless PNG, and the official
boxes are multiplied by the exact per-axis factors new_w/W and new_h/H.
"--mode stretched" instead copies the repo's JPEG bytes unchanged (416x416) and scales
boxes by 416/W and 416/H (faces are then geometrically distorted).

Usage: python3 assemble.py [--mirror /work/.mirror] [--out /work/facebench] [--mode restore|stretched]
Needs: git, python3, numpy, scipy, pillow.
"""
import argparse
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import scipy.io as sio
from PIL import Image

WIDER_IMG_REPO = "vishalw-iitk/Widerface_Yolov5"
WIDER_IMG_COMMIT = "cbae228a9750b8c6caabf508810d05fb1e1fad5d"
WIDER_IMG_DIR = "Model_compression/Quantization/Pytorch/PTQ/representative_dataset"

WIDER_GT_REPO = "ShiqiYu/libfacedetection.train"
WIDER_GT_COMMIT = "0047ac24afb1a50a0c6105001c89d1b5b805dbf1"
WIDER_GT_DIR = "data/widerface/labelv2/val/gt"
WIDER_SIZES = "data/widerface/labelv2/val/labelv2.txt"

NOFACE_REPO = "majedelhelou/denoising_datasets"
NOFACE_COMMIT = "58234876fef6f1b56306705c78dfd40cdb837b86"

# Hand-checked (visually) to contain no human face, statue/painting face or person.
# Excluded from CSun_Hays80: abbey, brewery, burial_chamber, candy_store, canal_urban,
# cathedral_indoor, fastfood_restaurant, fountain, inn_outdoor, lighthouse, mosque_outdoor,
# raceway, stadium_football, street, subway_platform, temple_east_asia, train_railway,
# viaduct, village (people, crowds, statues, frescoes, or too small to be sure).
SUN_EXCLUDE_PREFIXES = (
    "abbey_", "brewery_", "burial_chamber_", "candy_store_", "canal_urban_",
    "cathedral_indoor_", "fastfood_restaurant_", "fountain_", "inn_outdoor_", "lighthouse_",
    "mosque_outdoor_", "raceway_", "stadium_football_", "street_", "subway_platform_",
    "temple_east_asia_", "train_railway_", "viaduct_", "village_",
)
URBAN_EXCLUDE = {
    3, 7, 9, 13, 17, 20, 21, 22, 24, 28, 31, 32, 37, 46, 49, 50, 51, 53, 54, 56, 58, 65, 66,
    69, 70, 71, 76, 77, 79, 82, 83, 84, 86, 88, 89, 93, 94, 95, 97, 98,
}


def git_dir(mirror, repo):
    d = os.path.join(mirror, repo.replace("/", "+"), "repo")
    if not os.path.isdir(d):
        sys.exit(f"missing mirror {d}: bring it with fetch github:{repo}")
    return d


def git_show(gd, commit, path):
    return subprocess.run(["git", "--git-dir", gd, "show", f"{commit}:{path}"],
                          check=True, capture_output=True).stdout


def git_ls(gd, commit, path):
    out = subprocess.run(["git", "--git-dir", gd, "ls-tree", "--name-only", f"{commit}", path + "/"],
                         check=True, capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if l]


def load_wider(gd):
    def mat(name):
        return sio.loadmat(io.BytesIO(git_show(gd, WIDER_GT_COMMIT, f"{WIDER_GT_DIR}/{name}")))
    full = mat("wider_face_val.mat")
    settings = {s: mat(f"wider_{s}_val.mat") for s in ("easy", "medium", "hard")}
    recs = {}
    events = full["event_list"]
    for e in range(len(events)):
        ev = str(events[e][0][0])
        files = full["file_list"][e][0]
        for j in range(len(files)):
            name = str(files[j][0][0])
            boxes = np.asarray(full["face_bbx_list"][e][0][j][0], dtype=float).reshape(-1, 4)
            inv = np.asarray(full["invalid_label_list"][e][0][j][0]).reshape(-1)
            attrs = {k: np.asarray(full[f"{k}_label_list"][e][0][j][0]).reshape(-1).tolist()
                     for k in ("blur", "expression", "illumination", "occlusion", "pose")}
            sel = {}
            for s, m in settings.items():
                g = np.asarray(m["gt_list"][e][0][j][0]).reshape(-1)
                sel[s] = sorted(int(i) - 1 for i in g)  # MATLAB 1-based -> 0-based
            recs[name + ".jpg"] = dict(event=ev, boxes=boxes, invalid=inv, attrs=attrs, settings=sel)
    sizes = {}
    for line in git_show(gd, WIDER_GT_COMMIT, WIDER_SIZES).decode().splitlines():
        if line.startswith("#"):
            _, p, w, h = line.split()
            sizes[p.split("/")[-1]] = (int(w), int(h))
    return recs, sizes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror", default="/work/.mirror")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--mode", choices=("restore", "stretched"), default="restore")
    a = ap.parse_args()

    g_img = git_dir(a.mirror, WIDER_IMG_REPO)
    g_gt = git_dir(a.mirror, WIDER_GT_REPO)
    g_nf = git_dir(a.mirror, NOFACE_REPO)
    recs, sizes = load_wider(g_gt)

    for sub in ("faces", "nofaces"):
        shutil.rmtree(os.path.join(a.out, sub), ignore_errors=True)
        os.makedirs(os.path.join(a.out, sub))

    faces = []
    for path in sorted(git_ls(g_img, WIDER_IMG_COMMIT, WIDER_IMG_DIR)):
        name = path.split("/")[-1]
        if not name.lower().endswith(".jpg"):
            continue
        if name not in recs:
            sys.exit(f"{name} is not a WIDER FACE val image")
        r = recs[name]
        W, H = sizes[name]
        data = git_show(g_img, WIDER_IMG_COMMIT, path)
        im = Image.open(io.BytesIO(data))
        sw, sh = im.size
        if a.mode == "restore":
            s = min(sw / W, sh / H)
            nw, nh = max(1, round(W * s)), max(1, round(H * s))
            im = im.convert("RGB").resize((nw, nh), Image.LANCZOS)
            out_name = name[:-4] + ".png"
            im.save(os.path.join(a.out, "faces", out_name), optimize=True)
        else:
            nw, nh = sw, sh
            out_name = name
            with open(os.path.join(a.out, "faces", out_name), "wb") as f:
                f.write(data)
        fx, fy = nw / W, nh / H
        b = r["boxes"].copy()
        b[:, [0, 2]] *= fx
        b[:, [1, 3]] *= fy
        b = np.round(b, 2).tolist()
        # ignore = WIDER "invalid" faces, plus the few official boxes with zero width/height
        degenerate = (r["boxes"][:, 2] <= 0) | (r["boxes"][:, 3] <= 0)
        ign = [i for i in range(len(b)) if r["invalid"][i] or degenerate[i]]
        keep = [i for i in range(len(b)) if i not in ign]
        idx_map = {old: new for new, old in enumerate(keep)}
        faces.append({
            "file": f"faces/{out_name}",
            "width": nw, "height": nh,
            "boxes": [b[i] for i in keep],
            "ignore": [b[i] for i in ign],
            "wider": {
                "image": f"{r['event']}/{name}",
                "original_size": [W, H],
                "stored_size_in_repo": [sw, sh],
                "scale_xy": [fx, fy],
                "original_boxes": r["boxes"].astype(int).tolist(),
                "invalid": [int(v) for v in r["invalid"]],
                "attributes_blur_expression_illumination_occlusion_pose": [
                    [r["attrs"][k][i] for k in ("blur", "expression", "illumination", "occlusion", "pose")]
                    for i in range(len(b))],
                # indices into "boxes" (valid faces only) that the official easy/medium/hard
                # settings count as ground truth
                "setting_box_indices": {s: [idx_map[i] for i in v if i in idx_map]
                                        for s, v in r["settings"].items()},
            },
        })

    nofaces = []
    for d in ("CSun_Hays80", "CUrban100"):
        for path in sorted(git_ls(g_nf, NOFACE_COMMIT, d)):
            name = path.split("/")[-1]
            if d == "CSun_Hays80" and name.startswith(SUN_EXCLUDE_PREFIXES):
                continue
            if d == "CUrban100" and int(name[4:7]) in URBAN_EXCLUDE:
                continue
            out_name = ("sun_" if d == "CSun_Hays80" else "urban100_") + name
            with open(os.path.join(a.out, "nofaces", out_name), "wb") as f:
                f.write(git_show(g_nf, NOFACE_COMMIT, path))
            nofaces.append({"file": f"nofaces/{out_name}", "source": f"{d}/{name}"})

    manifest = {
        "box_format": "[x, y, w, h] in pixels of the file as stored here (top-left origin)",
        "face_mode": a.mode,
        "faces": faces,
        "nofaces": nofaces,
        "sources": [
            {"what": "200 WIDER FACE validation images (stored 416x416, stretched)",
             "repo": WIDER_IMG_REPO, "commit": WIDER_IMG_COMMIT,
             "paths": WIDER_IMG_DIR + "/*.jpg",
             "licence": "unknown (the repo states no licence). WIDER FACE: images come from the "
                        "WIDER dataset (web images); the WIDER FACE site/cards give the dataset for "
                        "non-commercial research use (commonly listed as CC BY-NC-ND 4.0)."},
            {"what": "official WIDER FACE val ground truth (eval_tools .mat files) and image sizes",
             "repo": WIDER_GT_REPO, "commit": WIDER_GT_COMMIT,
             "paths": [f"{WIDER_GT_DIR}/wider_face_val.mat",
                       f"{WIDER_GT_DIR}/wider_easy_val.mat",
                       f"{WIDER_GT_DIR}/wider_medium_val.mat",
                       f"{WIDER_GT_DIR}/wider_hard_val.mat",
                       WIDER_SIZES + " (header lines only: original W H)"],
             "licence": "repo: Apache-2.0 (LICENSE, Shiqi Yu / OpenMMLab); the .mat files are the "
                        "WIDER FACE authors' annotations (same WIDER FACE terms as above)."},
            {"what": "face-free scene photos: hand-checked subsets of CSun_Hays80 (SUN database "
                     "scenes used by Sun & Hays) and CUrban100 (Urban100, Huang et al. CVPR 2015)",
             "repo": NOFACE_REPO, "commit": NOFACE_COMMIT,
             "paths": ["CSun_Hays80/*.jpg", "CUrban100/*.png"],
             "licence": "unknown: the repo has no licence file and its README says the datasets are "
                        "'collected here for convenience, no ownership claimed'. SUN images are web "
                        "photos copyrighted by their owners (research use); Urban100 images are "
                        "Flickr photos distributed for research benchmarks."},
        ],
    }
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)

    nb = sum(len(x["boxes"]) for x in faces)
    ni = sum(len(x["ignore"]) for x in faces)
    print(f"faces: {len(faces)} images, {nb} boxes (+{ni} ignore); nofaces: {len(nofaces)} images")


if __name__ == "__main__":
    main()
