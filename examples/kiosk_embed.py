"""The shortest correct use of edgeface_runtime inside an application: who is in each frame?

    python examples/kiosk_embed.py --model model.tflite --detector face_detection_short_range.tflite \
        --gallery gallery.db --images frames/
"""

import argparse
from pathlib import Path

from edgeface_runtime import FaceVerifier, image_files

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
for option in ("--model", "--detector", "--gallery", "--images"):
    parser.add_argument(option, required=True, type=Path)
args = parser.parse_args()

# Create the verifier once (loading the models costs far more than a frame); `with` closes them.
with FaceVerifier.from_path(args.model, detector_path=args.detector, gallery_path=args.gallery) as verifier:
    for path in image_files(args.images):  # sorted by name; the formats the runtime decodes
        # A camera frame (an OpenCV BGR array) goes in the same way; a frame without a face gives no faces.
        result = verifier.process_frame(str(path))
        best = result.faces[0].identity.best if result.faces else None  # None: no face, or nobody known
        if best is not None:
            print(f"{path.name}: welcome, {best.name} (score {best.score:.2f})")  # act here: unlock, greet, ...
        else:
            print(f"{path.name}: {'unknown person' if result.faces else 'no face'}")
