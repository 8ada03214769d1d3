"""Write the bundled sample photographs (data/images/) from scikit-image's public-domain / CC0 samples.

Run: .venv/bin/python scripts/make_sample_images.py   (needs the dev extra: scikit-image)
"""
from pathlib import Path

import skimage.data
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "data" / "images"
SOURCES = {  # file stem -> the scikit-image sample (licences in data/README.md)
    "astronaut": skimage.data.astronaut,
    "chelsea": skimage.data.chelsea,
    "coffee": skimage.data.coffee,
    "rocket": skimage.data.rocket,
    "motorcycle": lambda: skimage.data.stereo_motorcycle()[0],  # the left view
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for stem, load in SOURCES.items():
        image = Image.fromarray(load())
        image.thumbnail((448, 448))  # LLaVA-1.5 sees 336 px; keep the files small
        image.convert("RGB").save(OUT / f"{stem}.jpg", quality=88)


if __name__ == "__main__":
    main()
