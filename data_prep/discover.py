"""Find candidate audio files under a source folder, in a stable order."""
from __future__ import annotations

import os
from pathlib import Path

# Extensions libsndfile (1.2, with mpg123/vorbis/opus) can decode.  Anything else is ignored,
# not rejected, so notes, list files and cover art next to the audio are harmless.
AUDIO_EXTS = frozenset({
    "wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "aifc", "au", "snd",
    "caf", "w64", "rf64", "sd2", "voc", "sph", "nist", "htk", "pvf", "xi", "avr", "paf",
    "svx", "8svx", "mat", "sds", "wve", "mpc", "ircam",
})


def find_audio(src_dir: str | os.PathLike, exclude: str | os.PathLike | None = None) -> tuple[list[str], int]:
    """(sorted POSIX relative paths with an audio extension, number of other files ignored).

    ``exclude`` (the output folder, if it lies inside the source) is not descended into.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source folder does not exist or is not a directory")
    skip = Path(exclude).resolve() if exclude is not None else None
    found, ignored = [], 0
    for root, dirs, files in os.walk(src):
        if skip is not None:
            dirs[:] = [d for d in dirs if (Path(root) / d).resolve() != skip]
        dirs.sort()
        for name in files:
            if name.rsplit(".", 1)[-1].lower() in AUDIO_EXTS and "." in name:
                found.append((Path(root) / name).relative_to(src).as_posix())
            else:
                ignored += 1
    return sorted(found), ignored
