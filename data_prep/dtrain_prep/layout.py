"""Names of everything `dtrain prepare` writes under OUT: the contract with dtrain.data.

dtrain.data may import this module (and only this one) from data_prep, so it imports nothing
but the standard library and pyarrow.
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "val")

SUMMARY = "summary.json"
CLASSES = "classes.json"
MANIFEST = "manifest.parquet"
WDS_DIR = "wds"
FFCV_DIR = "ffcv"
FILELIST_DIR = "filelists"
JPEG_DIR = "jpeg"              # converted / extracted JPEG copies for fn.readers.file
SOURCE_LINK = "src"            # symlink OUT/src -> --src, so clean originals need no copy
QUARANTINE_DIR = "quarantine"  # raw bytes of every rejected file, for inspection
WORK_DIR = ".work"             # per-shard manifest fragments and the run's options (resume state)
PER_PIXEL_MEAN = "per_pixel_mean.npy"  # R1's mean image of the train split (data.normalize=per_pixel_mean)
PIXEL_STATS = "pixel_stats.json"

# webdataset member extensions: the JPEG, the label as ASCII decimal (webdataset's convention)
# and the label as 4-byte little-endian int32 (what DALI decodes with dtypes=INT32).
EXT_JPEG = "jpg"
EXT_CLS = "cls"
EXT_LBL = "lbl"

FORMATS = ("wds", "ffcv", "filelist")  # the manifest and summary are always written

STATUS_OK = "ok"
STATUS_CONVERTED = "converted"
STATUS_REJECTED = "rejected"

MANIFEST_COLUMNS = (
    "split", "index", "source", "label", "synset", "width", "height", "bytes",
    "sha256", "status", "reason", "shard", "offset", "jpeg_path", "duplicate_of",
)


def manifest_schema():
    import pyarrow as pa

    return pa.schema([
        ("split", pa.string()),
        ("index", pa.int64()),
        ("source", pa.string()),
        ("label", pa.int64()),
        ("synset", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("shard", pa.string()),
        ("offset", pa.int64()),
        ("jpeg_path", pa.string()),
        ("duplicate_of", pa.string()),  # source of the identical image read first; "" for an original
    ])


def shard_name(split: str, shard_index: int) -> str:
    """Path of a webdataset shard relative to OUT."""
    return f"{WDS_DIR}/{split}/{split}-{shard_index:06d}.tar"


def index_name(shard: str) -> str:
    """The wds2idx index that sits beside a shard (DALI's `index_paths`)."""
    return shard[: -len(".tar")] + ".idx"


def ffcv_name(split: str) -> str:
    return f"{FFCV_DIR}/{split}.beton"


def ffcv_digest_name(split: str) -> str:
    """sha256 of every sample's stored image bytes in the .beton, 32 bytes each in sample order."""
    return f"{FFCV_DIR}/{split}.sha256"


def filelist_name(split: str) -> str:
    return f"{FILELIST_DIR}/{split}.txt"


def sample_key(position: int) -> str:
    """webdataset key of a candidate sample: its position in the shard order of its split.

    Keys contain no dots (webdataset splits key and extension at the first dot).
    """
    return f"{position:08d}"


def shard_paths(out: str | Path, split: str) -> list[Path]:
    """Shards of one split, in reading order."""
    return sorted((Path(out) / WDS_DIR / split).glob(f"{split}-*.tar"))
