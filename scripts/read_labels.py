"""Reads an image's label image with ome-zarr-py's own reader (the one napari-ome-zarr
uses) and checks that it finds it with the image's levels.

usage: read_labels.py IMAGE NAME
Exits 0 when ome-zarr-py lists IMAGE/labels/NAME as a label node (with the `Label` spec),
with as many levels as the image, each of the image's shape (without a channel axis the
label lacks), and its colours; else prints why and exits 1.
"""

import sys

from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Reader


def main(image: str, name: str) -> int:
    nodes = list(Reader(parse_url(image))())
    images = [n for n in nodes if any(isinstance(s, Multiscales) for s in n.specs)
              and not any(isinstance(s, Label) for s in n.specs)]
    labels = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    found = [n for n in labels if str(n.zarr).rstrip("/").split(" ")[0].endswith(f"labels/{name}")]
    if not images or not found:
        print(f"ome-zarr-py found images {images} and labels {labels}, not labels/{name}")
        return 1
    image_levels = [tuple(d.shape) for d in images[0].data]
    label_levels = [tuple(d.shape) for d in found[0].data]
    axes = [a["name"] for a in images[0].metadata["axes"]]
    if len(label_levels) != len(image_levels):
        print(f"label levels {label_levels} vs image levels {image_levels}")
        return 1
    for k, (shape, label_shape) in enumerate(zip(image_levels, label_levels)):
        expected = tuple(n for a, n in zip(axes, shape) if a != "c" or len(label_shape) == len(shape))
        if label_shape != expected:
            print(f"level {k}: label shape {label_shape}, image shape {shape}")
            return 1
    colors = found[0].metadata.get("color")
    if not colors:
        print(f"no label colours read: {found[0].metadata}")
        return 1
    print(f"ome-zarr-py reads labels/{name}: {len(label_levels)} levels, {len(colors)} colours")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
