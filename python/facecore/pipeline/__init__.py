"""The face pipeline: an image in, faces with their fields out.

`engine` runs the stages in order (`Engine.detect` -> `Face`): `image` decodes, `detect` finds faces
(MTCNN), `align` makes the chips, `embed` the 128-d embedding, `landmarks` the face mesh and the 72
points, `pose` the head angles, `attributes` age, gender, emotion, `quality` blur, light and
completeness, `liveness` the image anti-spoofing score, `video` H5 video liveness. `fields` is the
one table of the `face_field` names, what computes each and what is left out.
"""
