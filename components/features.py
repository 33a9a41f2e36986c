"""The one place that names TFRecord features, label keys, roles and split names.

Everything else (ingest, the model, the EvalConfig, the servers) imports from here.
"""

from __future__ import annotations

IMAGE_KEY = "image/encoded"
FORMAT_KEY = "image/format"
IDENTITY_KEY = "identity"
LABEL_KEY = "label"
IS_KNOWN_KEY = "is_known"
ROLE_KEY = "role"

# Roles of a person in the open-set protocol (DESIGN.md, "Evaluation protocol").
ROLE_KNOWN = "known"
ROLE_KNOWN_UNKNOWN = "known_unknown"
ROLE_UNKNOWN_UNKNOWN = "unknown_unknown"
ROLES = (ROLE_KNOWN, ROLE_KNOWN_UNKNOWN, ROLE_UNKNOWN_UNKNOWN)

# TFRecord splits, one sub-folder each under the ingest output.
SPLIT_TRAIN = "train"
SPLIT_CALIB = "calib"
SPLIT_TEST = "test"
SPLITS = (SPLIT_TRAIN, SPLIT_CALIB, SPLIT_TEST)

UNKNOWN_LABEL = -1

# Model outputs, by name (never by position).
OUTPUT_LOGITS = "logits"
OUTPUT_IDENTITY_PROBS = "identity_probs"
OUTPUT_KNOWN_PROB = "known_prob"
OUTPUT_IDENTITY = "identity"
OUTPUT_IS_KNOWN = "is_known"
OUTPUT_THRESHOLD = "threshold"

# Signatures of the exported SavedModel.
SIGNATURE_EXAMPLES = "serving_default"
SIGNATURE_IMAGE_BYTES = "serving_image_bytes"
SIGNATURE_IMAGE = "serving_image"
INPUT_EXAMPLES = "examples"
INPUT_IMAGE_BYTES = "image_bytes"
INPUT_IMAGE = "image"

LABELS_FILE = "labels.txt"
MANIFEST_FILE = "manifest.csv"
INGEST_INFO_FILE = "ingest.json"
