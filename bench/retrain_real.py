"""Retrain from scratch on real airborne RGB imagery with VOC labels; recall on a held-out image.

issue 11, done when: "from scratch on CPU, in at most 15 minutes of training,
a model trained on a few hundred labeled trees in real airborne RGB imagery
finds most trees in a new image of the same forest".

Data: the labeled NEON images that the DeepForest package (MIT licence) ships
in its wheel on PyPI.  ``pip download --no-deps deepforest`` fetches the
wheel into a cache outside the repository (default
``~/.cache/aerialdet/bench``); only its data files are read (no code of it is
used or copied).  Two images of the same Yellowstone (YELL) forest, and two
400 px chips of other forests, much as the issue's user had them:

``--setup dense`` (default):

* ``2019_YELL_2_541000_4977000_image_crop.png`` (1249 x 1035 px, 279 trees,
  closed conifer stand): its top 80 % trains, its bottom 20 % validates (best
  epoch, score calibration);
* the wheel's two labeled 400 x 400 px chips of other NEON sites, as the
  issue's user had "two 400 x 400 px chips": ``OSBS_029`` (61 trees, Florida)
  and ``SOAP_061`` (37 trees, Sierra Nevada, labeled ``Alive``/``Dead``; both
  are trees, so its labels are written as ``Tree``): they train too
  (``--chips`` chooses; runs 1-8 of bench/RESULTS.md had ``OSBS_029`` only);
* ``2019_YELL_2_528000_4978000_image_crop2.png`` (2299 x 2472 px, 574 trees,
  open stand in a meadow): the new image, seen only at the end.

``--setup sparse``: the reverse, without the chips: top 80 % of the open
stand trains, its bottom 20 % validates, the closed stand is the new image.

``--setup blocks``: labels from both stands, new ground of both.  Each YELL
image is cut into row bands: its top 60 % trains, the next 10 % validates,
and its bottom 30 % is new (the validation band keeps it 103 and 247 px
from the nearest training row, more than the tallest crown, which the
script checks); the chips train too.  507 + 98 trees train, 82
validate, 264 are new.  ``dense`` and ``sparse`` measure the transfer from
one kind of stand to the other; ``blocks`` measures new ground of the kinds
the labels cover.  ``--setup blocks-half`` trains on rows 30-60 % only (77 +
162 + 98 = 337 trees, about as many as ``dense``), with the same validation
and new rows as ``blocks``: tree count apart from the kinds of stand.

Steps: extract and cut the images (PNG + VOC XML for each band), run
``python -m jobs.train`` from scratch (random weights), then detect on each
new image with ``best/`` and report recall, precision and F1 at IoU 0.4
at the best-F1 score threshold that training stored in the checkpoint (and
at 0.5 for comparison), plus AP50, over all new trees and per new image.

The wheel holds one image of each kind of YELL stand, so ``blocks`` has
no image of its own that is new: its new ground is the unseen bottom of
the two images, written as PNG + VOC files of their own.

``--evaluate-only`` evaluates a finished run's best/ again, on its setup's
new ground or on ``--new`` VOC files (PNG beside them; refused when their
image trained or validated that run), into ``OUT/evaluated-<new>.json``.

Run::

    .venv/bin/python bench/retrain_real.py --out /tmp/retrain_real --steps 220
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WHEEL = "deepforest==2.1.0"
OPEN_STAND = "2019_YELL_2_528000_4978000_image_crop2"
CLOSED_STAND = "2019_YELL_2_541000_4977000_image_crop"
CHIPS = ("OSBS_029", "SOAP_061")
# a chip's VOC <filename>: OSBS_029's names its GeoTIFF, SOAP_061's its PNG
CHIP_IMAGES = {"OSBS_029": "OSBS_029.tif", "SOAP_061": "SOAP_061.png"}


@dataclass(frozen=True)
class Setup:
    """Which images train, validate, and are new (seen once, at the end).

    Attributes:
        cuts: image -> (a, b), shares of its rows: rows above ``a`` train,
            rows from ``a`` to ``b`` validate (best epoch, score calibration),
            rows below ``b`` are new ground.
        chips: whether the 400 px chips train too.
        new_images: images that are new whole.
        train_from: share of the rows above which nothing is used, so that
            only rows from ``train_from`` to ``a`` train (fewer trees, the
            same validation and new rows).
    """

    cuts: dict[str, tuple[float, float]]
    chips: bool
    new_images: tuple[str, ...] = ()
    train_from: float = 0.0


SETUPS = {
    "dense": Setup({CLOSED_STAND: (0.8, 1.0)}, True, (OPEN_STAND,)),
    "sparse": Setup({OPEN_STAND: (0.8, 1.0)}, False, (CLOSED_STAND,)),
    "blocks": Setup({CLOSED_STAND: (0.6, 0.7), OPEN_STAND: (0.6, 0.7)}, True),
    # blocks with half its training rows: tree count apart from the kinds of stand
    "blocks-half": Setup({CLOSED_STAND: (0.6, 0.7), OPEN_STAND: (0.6, 0.7)}, True, train_from=0.3),
}


def fetch_wheel(cache: Path) -> Path:
    """The DeepForest wheel in ``cache/wheels`` (``pip download --no-deps`` when absent)."""
    wheels = cache / "wheels"
    found = sorted(wheels.glob("deepforest-*.whl"))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(wheels), "-q"]
        subprocess.run(cmd, check=True)
        found = sorted(wheels.glob("deepforest-*.whl"))
    return found[-1]


def extract_data(wheel: Path, data_dir: Path) -> str:
    """Copy the labeled images and their VOC files out of the wheel; return its licence line."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        files = [f"{stem}{ext}" for stem in (OPEN_STAND, CLOSED_STAND) for ext in (".png", ".xml")]
        files += [name for stem in CHIPS for name in (CHIP_IMAGES[stem], f"{stem}.xml")]
        for name in files:
            target = data_dir / name
            if not target.exists():
                target.write_bytes(zf.read(f"deepforest/data/{name}"))
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        licence = [ln for ln in zf.read(meta).decode().splitlines() if ln.startswith("License")]
    return "; ".join(licence) or "unknown"


def voc_boxes(xml_file: Path) -> np.ndarray:
    """float ``[N, 4]`` xyxy px of a VOC file."""
    root = ET.parse(xml_file).getroot()
    boxes = [
        [float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore[union-attr]
        for o in root.iter("object")
    ]
    return np.asarray(boxes, float).reshape(-1, 4)


def write_part(image: np.ndarray, boxes: np.ndarray, rows: tuple[int, int], out: Path) -> int:
    """Rows ``[r0, r1)`` of an image as PNG + VOC XML (boxes at least half inside, clipped); returns boxes."""
    from PIL import Image

    r0, r1 = rows
    b = boxes - [0, r0, 0, r0]
    clipped = np.clip(b, 0, [image.shape[1], r1 - r0, image.shape[1], r1 - r0])
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    kept = clipped[(clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]) >= 0.5 * area]
    Image.fromarray(image[r0:r1]).save(out.parent / f"{out.name}.png")
    objects = "".join(
        f"<object><name>Tree</name><bndbox><xmin>{x1:.0f}</xmin><ymin>{y1:.0f}</ymin>"
        f"<xmax>{x2:.0f}</xmax><ymax>{y2:.0f}</ymax></bndbox></object>"
        for x1, y1, x2, y2 in kept
    )
    (out.parent / f"{out.name}.xml").write_text(
        f"<annotation><filename>{out.name}.png</filename>{objects}</annotation>"
    )
    return len(kept)


def tree_labels(data_dir: Path, stem: str) -> Path:
    """``{stem}.xml`` with every object named ``Tree`` (SOAP's ``Alive``/``Dead``) as ``{stem}.tree.xml``."""
    tree = ET.parse(data_dir / f"{stem}.xml")
    for name in tree.getroot().iter("name"):
        name.text = "Tree"
    out = data_dir / f"{stem}.tree.xml"
    tree.write(out)
    return out


def split_images(data_dir: Path, setup: Setup) -> tuple[dict[str, list[Path]], dict[str, int]]:
    """Cut each image of ``setup.cuts`` into row bands (PNG + VOC XML each).

    Returns ({"train"|"val"|"new": [VOC files]}, trees per part); a band is
    ``{stem}.rows{first}-{last}`` in percent of the image's rows.
    """
    from PIL import Image

    parts: dict[str, list[Path]] = {"train": [], "val": [], "new": []}
    counts = dict.fromkeys(parts, 0)
    for stem, (a, b) in setup.cuts.items():
        image = np.asarray(Image.open(data_dir / f"{stem}.png").convert("RGB"))
        boxes = voc_boxes(data_dir / f"{stem}.xml")
        shares = (setup.train_from, a, b, 1.0)
        edges = [int(image.shape[0] * share) for share in shares]  # band edges, rows
        for i, part in enumerate(parts):
            if shares[i + 1] <= shares[i]:
                continue
            out = data_dir / f"{stem}.rows{shares[i] * 100:.0f}-{shares[i + 1] * 100:.0f}"
            counts[part] += write_part(image, boxes, (edges[i], edges[i + 1]), out)
            parts[part].append(out.with_name(f"{out.name}.xml"))
        _check_apart(stem, boxes, edges[1], edges[2])
    for stem in setup.new_images:
        parts["new"].append(data_dir / f"{stem}.xml")
        counts["new"] += len(voc_boxes(data_dir / f"{stem}.xml"))
    return parts, counts


def _check_apart(stem: str, boxes: np.ndarray, train_end: int, new_start: int) -> None:
    """Stop when a labeled crown reaches from the training rows into the new rows."""
    both = (boxes[:, 1] < train_end) & (boxes[:, 3] > new_start)
    if both.any():
        raise SystemExit(
            f"{stem}: {int(both.sum())} crown(s) reach from the training rows (< {train_end}) into the new "
            f"rows (>= {new_start}); widen the validation band"
        )


def image_of(label: str | Path) -> str:
    """The source image of a label file: ``X.rows0-60.xml``, ``X.train.xml``, ``X.tree.xml`` -> ``X``."""
    return Path(label).name.split(".")[0]


def train(
    data_dir: Path, parts: dict[str, list[Path]], run: Path, args: argparse.Namespace
) -> tuple[float, str]:
    """``python -m jobs.train`` from scratch; (seconds, its stdout)."""
    labels = [*map(str, parts["train"]), *(str(tree_labels(data_dir, stem)) for stem in args.chips)]
    val = [arg for xml in parts["val"] for arg in ("--val", str(xml))]
    cmd = [
        sys.executable, "-m", "jobs.train", *labels, *val,
        "--out", str(run), "--overwrite", "--steps", str(args.steps), "--tile-size-px", str(args.tile_size_px),
        "--batch-size", str(args.batch_size), "--backbone", "resnet18", "--cpus-per-worker", str(args.cpus),
        "--lr", str(args.lr), "--precision", args.precision, "--scale-range", args.scale_range,
        "--seed", str(args.seed), "--box-loss", args.box_loss, "--ema", str(args.ema), "--no-progress",
        *([] if args.augment else ["--no-augment"]),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.time()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"training failed:\n{done.stdout}\n{done.stderr[-4000:]}")
    return time.time() - started, done.stdout + done.stderr


def evaluate_held_out(run: Path, new: list[Path]) -> dict[str, object]:
    """Detect on each new image (VOC file beside its PNG) with best/, one pass each; metrics at IoU 0.4 and 0.5.

    The figures pool every new image's trees; ``per_image`` has recall and
    precision at IoU 0.4 of each.
    """
    import torch
    from PIL import Image

    from retinanet.checkpoint import load_dir
    from retinanet.evaluate import ImageBoxes, best_f1_thresholds, evaluate_detections

    ckpt = load_dir(run / "best")
    gt, dt = [], []
    for xml in new:
        image = np.array(Image.open(xml.with_suffix(".png")).convert("RGB")).transpose(2, 0, 1)
        with torch.inference_mode():
            out = ckpt.model([torch.as_tensor(image, dtype=torch.float32)])[0]
        boxes = voc_boxes(xml)
        gt.append(ImageBoxes(boxes, np.zeros(len(boxes), int)))
        dt.append(ImageBoxes(out["boxes"].numpy(), out["labels"].numpy(), out["scores"].numpy()))
    threshold = ckpt.meta["score_thresholds"]["Tree"]
    result: dict[str, object] = {
        "calibrated_threshold": threshold,
        "num_gt": sum(len(g.boxes_xyxy) for g in gt),
    }
    for iou in (0.4, 0.5):
        m = evaluate_detections(gt, dt, ["Tree"], iou=iou, score_threshold=threshold)["Tree"]
        result[f"iou{iou}"] = {k: m[k] for k in ("precision", "recall", "tp", "fp", "fn", "ap50")}
    result["held_out_best_f1_iou0.4"] = best_f1_thresholds(gt, dt, ["Tree"], iou=0.4)["Tree"]
    result["per_image"] = {
        xml.stem: {
            k: round(v, 3)
            for k, v in evaluate_detections([g], [d], ["Tree"], iou=0.4, score_threshold=threshold)[
                "Tree"
            ].items()
            if k in ("recall", "precision")
        }
        for xml, g, d in zip(new, gt, dt)
    }
    return result


def _evaluate_only(
    parser: argparse.ArgumentParser, args: argparse.Namespace, parts: dict[str, list[Path]]
) -> None:
    """Evaluate OUT/run/best on the setup's new ground or on ``--new``; write ``OUT/evaluated-<new>.json``.

    Refused when ``--setup`` trained on other images than the run did, or
    when a ``--new`` file's image trained or validated the run; a missing run or
    file is one line naming it.
    """
    spec_file = args.out / "run" / "train_spec.json"
    if not spec_file.is_file():
        parser.error(f"--evaluate-only: {spec_file} not found: OUT holds no run of this bench")
    spec = json.loads(spec_file.read_text())
    trained = {image_of(label) for label in spec["labels"]}
    if trained - set(CHIPS) != {image_of(xml) for xml in parts["train"]}:
        parser.error(
            f"--evaluate-only: the run trained on {sorted(trained)}, not on --setup {args.setup}'s images"
        )
    new = args.new or parts["new"]
    seen = trained | {image_of(label) for label in spec.get("val_labels", [])}
    if args.new and any(image_of(xml) in seen for xml in new):  # the setup's own new rows are apart
        parser.error(
            f"--new: {sorted(image_of(x) for x in new)} include an image the run trained or validated on"
        )
    missing = [str(f) for xml in new for f in (xml, xml.with_suffix(".png")) if not f.is_file()]
    if missing:
        parser.error(f"--new: not found: {', '.join(missing)} (a VOC file needs its PNG beside it)")
    result = {
        "run": str(args.out / "run"),
        "new": [xml.stem for xml in new],
        **evaluate_held_out(args.out / "run", new),
    }
    print(json.dumps(result, indent=2))
    name = "+".join(xml.stem for xml in new)
    (args.out / f"evaluated-{name}.json").write_text(json.dumps(result, indent=2))


def main() -> None:
    """Fetch, split, train, evaluate; print one JSON object."""
    from retinanet.config import BOX_LOSSES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/aerialdet_retrain_real"))
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "aerialdet" / "bench")
    parser.add_argument("--setup", choices=sorted(SETUPS), default="dense")
    parser.add_argument(
        "--chips",
        default=None,
        help=f"chips that train too with --setup dense [default: {','.join(CHIPS)}]",
    )
    parser.add_argument("--steps", type=int, default=220)
    parser.add_argument("--tile-size-px", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--precision", default="fp32", help="train --precision (fp32, bf16, auto)")
    parser.add_argument("--scale-range", default="0.8,1.25", help="train --scale-range LOW,HIGH")
    parser.add_argument("--seed", type=int, default=0, help="train --seed")
    parser.add_argument("--box-loss", default="l1", choices=BOX_LOSSES, help="train --box-loss")
    parser.add_argument("--ema", type=int, default=0, help="train --ema STEPS (weight average half-life)")
    parser.add_argument("--no-augment", dest="augment", action="store_false", help="train --no-augment")
    parser.add_argument(
        "--evaluate-only", action="store_true", help="Evaluate OUT/run/best as it is (a run stopped early)."
    )
    parser.add_argument(
        "--new",
        type=Path,
        action="append",
        help="with --evaluate-only: VOC file(s) (PNG beside) to evaluate on instead of the setup's new ground",
    )
    args = parser.parse_args()
    setup = SETUPS[args.setup]
    if args.chips is not None and not setup.chips:
        parser.error(f"--chips: --setup {args.setup} trains on no chip")
    chips = (args.chips or ",".join(CHIPS)) if setup.chips else ""
    args.chips = [c for c in chips.split(",") if c]
    if not set(args.chips) <= set(CHIPS):
        parser.error(f"--chips: choose from {','.join(CHIPS)}, got {','.join(args.chips)}")
    if args.new and not args.evaluate_only:
        parser.error("--new: only with --evaluate-only")
    data_dir = args.cache / "deepforest_data"
    licence = extract_data(fetch_wheel(args.cache), data_dir)
    parts, counts = split_images(data_dir, setup)
    if args.evaluate_only:
        _evaluate_only(parser, args, parts)
        return
    counts["train"] += sum(len(voc_boxes(data_dir / f"{stem}.xml")) for stem in args.chips)
    seconds, log = train(data_dir, parts, args.out / "run", args)
    rows = [json.loads(line) for line in (args.out / "run" / "metrics.jsonl").read_text().splitlines()]
    result = {
        "data_licence": licence,
        "setup": {
            "name": args.setup,
            "cuts": setup.cuts,
            "train_from": setup.train_from,
            "chips": args.chips,
            "new": [xml.stem for xml in parts["new"]],
        },
        "trees": counts,
        "train_seconds": round(seconds, 1),
        "steps": rows[-1]["global_step"],
        "epochs": len(rows),
        "val_ap50_per_epoch": [round(r["val_ap50"], 3) for r in rows],
        "new_image": evaluate_held_out(args.out / "run", parts["new"]),
        "train_output": log.splitlines()[:6],
    }
    print(json.dumps(result, indent=2))
    (args.out / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
