#!/usr/bin/env bash
# README figures: one per modality, made by the shipped models on test files that pydicom and
# pydicom-data ship (CT, MR, CR). Nothing from ../shared goes into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCS=${DOCS:-docs}
mkdir -p "$DOCS"
file() { python -c "from pydicom.data import get_testdata_file as g; print(g('$1'))"; }
medsr-edge compare "$(file 693_UNCR.dcm)" --window brain -o "$DOCS/compare-ct.png"
medsr-edge compare "$(file MR2_UNCR.dcm)" -o "$DOCS/compare-mr.png"
medsr-edge compare "$(file RG3_UNCR.dcm)" -o "$DOCS/compare-cr.png"
medsr-edge compare "$(file 693_UNCR.dcm)" --scale 2 --window brain -o "$DOCS/compare-ct-x2.png"
