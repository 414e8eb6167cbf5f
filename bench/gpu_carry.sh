#!/usr/bin/env bash
# Builds .carry/, what bench/gpu.sh needs on a GPU machine that has no network (the lent H200: Python 3.12,
# torch 2.11 + numpy/scipy/pyyaml/tqdm/pillow/tensorboard/fsspec/pandas/pyarrow/pytest... preinstalled).
# Run it here, where pip reaches PyPI; then send .carry with the call (device tool: carry [".carry"]).
#
#     bash bench/gpu_carry.sh [PATH/TO/state-spaces-s4 checkout]     (~35 MiB; the tool's limit is 64 MiB)
#
#   .carry/wheels/   the project's pure / small dependencies the image lacks: webdataset (+ braceexpand),
#                    soundfile (+ cffi, pycparser), pykeops + keopscore (built here from their sdists)
#   .carry/ray/      ray 2.60.0 for cp312 repacked: its wheel is 79 MB (76 MiB) zipped, over one call's limit,
#                    so it travels as ray-site.tar.xz (the wheel's tree without ray/jars (Java), the
#                    dashboard's web client and RLlib: ~25 MB) plus the wheels of what ray[default,train]
#                    needs and the image lacks (jsonschema, pydantic, tensorboardX, opencensus, opentelemetry...)
#   .carry/peer/s4/  the paper's own code for the side-by-side figure (models/s4/s4.py,
#                    models/sashimi/sashimi.py and the commit they came from): never committed
#
# Nothing here is committed (.carry/ is ignored through .git/info/exclude). Everything is fetched for
# CPython 3.12 on manylinux x86-64 with --no-deps: the lists below ARE the dependency closure, minus what the
# image already has (carrying a second numpy or protobuf would shadow the image's own).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
S4="${1:-}"
CARRY="$ROOT/.carry"
PIP="${PIP:-python3 -m pip}"
grep -qx '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >> .git/info/exclude
PLAT=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64
      --platform manylinux1_x86_64)
fetch() {  # fetch DIR PKG...: binary wheels for the GPU machine, no dependency resolution
    local dir="$1"
    shift
    mkdir -p "$dir"
    for p in "$@"; do
        $PIP download -q --no-deps --only-binary=:all: "${PLAT[@]}" -d "$dir" "$p" 2>&1 | grep -v "^WARNING: Location" || true
        ls "$dir" | grep -qi "^$(echo "${p%%[=<>]*}" | tr '-' '_')" || { echo "gpu_carry: no wheel for $p" >&2; exit 1; }
    done
}

rm -rf "$CARRY/wheels" "$CARRY/ray"
fetch "$CARRY/wheels" webdataset==1.0.2 braceexpand soundfile==0.14.0 cffi pycparser
$PIP wheel -q --no-deps -w "$CARRY/wheels" pykeops==2.3 keopscore==2.3 2>&1 | grep -v "^WARNING: Location" || true

fetch "$CARRY/ray" jsonschema jsonschema-specifications referencing rpds-py pydantic pydantic-core annotated-types \
    typing-inspection tensorboardX aiohttp-cors colorful opencensus opencensus-context google-api-core \
    google-auth googleapis-common-protos proto-plus pyasn1 pyasn1-modules opentelemetry-api opentelemetry-sdk \
    opentelemetry-proto opentelemetry-semantic-conventions opentelemetry-exporter-prometheus smart-open \
    virtualenv distlib platformdirs python-discovery
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
$PIP download -q --no-deps --only-binary=:all: "${PLAT[@]}" -d "$TMP" ray==2.60.0 2>&1 | grep -v "^WARNING: Location" || true
mkdir "$TMP/site"
(cd "$TMP/site" && unzip -q "$TMP"/ray-2.60.0-*.whl && rm -rf ray/jars ray/dashboard/client/build ray/rllib)  # unzip keeps exec bits
# the dashboard's HTTP head refuses to start without its web client's folder; its API needs none of the files
mkdir -p "$TMP/site/ray/dashboard/client/build/static"
echo "<html><body>dashboard web client stripped for the GPU carry (bench/gpu_carry.sh)</body></html>" \
    > "$TMP/site/ray/dashboard/client/build/index.html"
echo "gpu_carry: compressing ray (xz -9, about 1.5 minutes on 2 cores)"
tar -C "$TMP/site" -cf - . | xz -9 -T0 > "$CARRY/ray/ray-site.tar.xz"

if [ -n "$S4" ]; then
    rm -rf "$CARRY/peer/s4"
    mkdir -p "$CARRY/peer/s4/models/s4" "$CARRY/peer/s4/models/sashimi"
    if [ -d "$S4/.git" ] || git -C "$S4" rev-parse >/dev/null 2>&1; then
        git -C "$S4" show HEAD:models/s4/s4.py > "$CARRY/peer/s4/models/s4/s4.py"
        git -C "$S4" show HEAD:models/sashimi/sashimi.py > "$CARRY/peer/s4/models/sashimi/sashimi.py"
        git -C "$S4" rev-parse HEAD > "$CARRY/peer/s4/COMMIT"
    else
        cp "$S4/models/s4/s4.py" "$CARRY/peer/s4/models/s4/"
        cp "$S4/models/sashimi/sashimi.py" "$CARRY/peer/s4/models/sashimi/"
    fi
fi
du -sh "$CARRY" "$CARRY"/*
